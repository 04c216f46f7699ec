//! `slc-detector bench-grammar`: llguidance on a checkpoint's tokenizer (the real 151,665-token
//! one is what matters): the token trie's build time, then per cue-set schema of N concepts the
//! grammar's build time and the per-step mask time (p50/p99) of a decode that writes a valid
//! cue set, with how many tokens jump-forward forced and whether every forced run is the
//! model's own tokenization. No model weights are loaded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use slc_engine::constrain::{ConstraintVocabulary, Grammar};
use slc_engine::tokenizer::QwenTokenizer;

use crate::cli::grammar_walk::{sample_cue_set, sample_ids, walk_answer};
use crate::detection::{LOCATION_MAX_CHARS, cue_set_schema};

/// Qwen2.5-VL-3B's logit count, for a tokenizer folder without a config.json.
const QWEN25_VL_3B_VOCAB: usize = 151_936;

#[derive(Debug, clap::Args)]
pub struct BenchGrammarArgs {
    /// Checkpoint or tokenizer directory holding tokenizer.json.
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    /// Concept counts to time, comma separated.
    #[arg(
        long,
        env = "SLC_BENCH_CONCEPTS",
        value_delimiter = ',',
        default_value = "1,4,16"
    )]
    pub concepts: Vec<usize>,
    /// Decodes per concept count (the grammar is rebuilt for each).
    #[arg(long, env = "SLC_BENCH_REPEATS", default_value_t = 5)]
    pub repeats: usize,
    /// Location length the schema allows (the service's cap by default).
    #[arg(long, env = "SLC_BENCH_LOCATION_CHARS", default_value_t = LOCATION_MAX_CHARS)]
    pub location_chars: usize,
    /// Rows of the model's logits: config.json's `vocab_size` when the folder has one, else
    /// Qwen2.5-VL-3B's 151,936.
    #[arg(long, env = "SLC_BENCH_MODEL_VOCAB")]
    pub model_vocab_size: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct GrammarBenchReport {
    pub tokenizer_vocab: usize,
    pub model_vocab: usize,
    pub tokenizer_load_ms: f64,
    /// Token trie and llguidance parser factory: once per tokenizer.
    pub vocabulary_build_ms: f64,
    pub cases: Vec<CaseReport>,
}

#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub concepts: usize,
    pub answer_bytes: usize,
    /// `Constraint::new` (schema → grammar → parser): first and median over the repeats.
    pub grammar_build_first_ms: f64,
    pub grammar_build_median_ms: f64,
    /// Per sampled token, over all repeats.
    pub mask_steps: usize,
    pub mask_p50_us: f64,
    pub mask_p99_us: f64,
    pub mask_max_us: f64,
    /// Per step (`compute_ff_tokens`).
    pub forced_p50_us: f64,
    pub forced_p99_us: f64,
    /// One decode's split between sampled and forced tokens.
    pub sampled_tokens: usize,
    pub forced_tokens: usize,
    pub forced_runs: usize,
    /// Every forced run equals the tokens the model would have written.
    pub forced_runs_canonical: bool,
}

pub fn run(args: &BenchGrammarArgs) -> anyhow::Result<GrammarBenchReport> {
    anyhow::ensure!(args.repeats > 0, "--repeats must be at least 1");
    let started = Instant::now();
    let tokenizer = QwenTokenizer::from_model_dir(&args.model)?;
    let tokenizer_load_ms = ms(started.elapsed());
    let model_vocab = match args.model_vocab_size {
        Some(size) => size,
        None => config_vocab_size(&args.model)?.unwrap_or(QWEN25_VL_3B_VOCAB),
    };
    let started = Instant::now();
    let vocabulary = ConstraintVocabulary::new(&tokenizer, model_vocab)?;
    let vocabulary_build_ms = ms(started.elapsed());
    let cases = args
        .concepts
        .iter()
        .map(|&count| bench_case(&tokenizer, &vocabulary, count, args))
        .collect::<anyhow::Result<_>>()?;
    Ok(GrammarBenchReport {
        tokenizer_vocab: tokenizer.vocab_size(),
        model_vocab,
        tokenizer_load_ms,
        vocabulary_build_ms,
        cases,
    })
}

fn bench_case(
    tokenizer: &QwenTokenizer,
    vocabulary: &ConstraintVocabulary,
    count: usize,
    args: &BenchGrammarArgs,
) -> anyhow::Result<CaseReport> {
    let schema = cue_set_schema(&sample_ids(count), args.location_chars);
    let answer = sample_cue_set(&schema, args.location_chars);
    let grammar = Grammar::JsonSchema(schema);
    let (mut builds, mut masks, mut forced_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..args.repeats {
        let started = Instant::now();
        drop(slc_engine::constrain::Constraint::new(
            vocabulary, &grammar,
        )?);
        builds.push(started.elapsed());
        let walk = walk_answer(tokenizer, vocabulary, &grammar, &answer)?;
        masks.extend_from_slice(&walk.mask_times);
        forced_times.extend_from_slice(&walk.forced_times);
        last = Some(walk);
    }
    let walk = last.context("at least one repeat")?;
    let first_build = builds[0];
    builds.sort();
    masks.sort();
    forced_times.sort();
    Ok(CaseReport {
        concepts: count,
        answer_bytes: answer.len(),
        grammar_build_first_ms: ms(first_build),
        grammar_build_median_ms: ms(builds[builds.len() / 2]),
        mask_steps: masks.len(),
        mask_p50_us: us(percentile(&masks, 0.50)),
        mask_p99_us: us(percentile(&masks, 0.99)),
        mask_max_us: us(masks.last().copied().unwrap_or_default()),
        forced_p50_us: us(percentile(&forced_times, 0.50)),
        forced_p99_us: us(percentile(&forced_times, 0.99)),
        sampled_tokens: walk.sampled_tokens,
        forced_tokens: walk.forced_tokens,
        forced_runs: walk.forced_runs.len(),
        forced_runs_canonical: walk.forced_runs.iter().all(|run| run.matches()),
    })
}

/// `vocab_size` of the folder's config.json (flat or under `text_config`), if it has one.
fn config_vocab_size(dir: &std::path::Path) -> anyhow::Result<Option<usize>> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Ok(None);
    }
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(config["vocab_size"]
        .as_u64()
        .or_else(|| config["text_config"]["vocab_size"].as_u64())
        .map(|v| v as usize))
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

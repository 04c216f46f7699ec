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
//! Qwen2.5-VL-3B widths (`slc-detector make-checkpoint`), given the tiny fixture tokenizer (the
//! real one cannot be downloaded here) and Qwen's published pixel bounds.

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
    /// `f32`, `bf16` or `f16`.
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
            make_checkpoint(&bin_dir, dir, &config)?;
            dir.clone()
        }
        (None, None) => engine_fixtures().join("qwen25vl/untied"),
    };
    let results = match config.detect_only {
        Some(count) => detect_only(&config, &bin_dir, &model, count).await?,
        None => turns(&config, &bin_dir, &model).await?,
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

async fn turns(config: &BenchConfig, bin_dir: &Path, model: &Path) -> Result<Value> {
    let mut medians: BTreeMap<(usize, String), BTreeMap<&str, f64>> = BTreeMap::new();
    let mut raw = Vec::new();
    let mut turn = 0usize;
    for name in &config.configs {
        let optimized = match name.as_str() {
            "optimized" => true,
            "naive" => false,
            other => bail!("unknown configuration {other:?}: use optimized or naive"),
        };
        eprintln!("== {name}: starting the services on {}", model.display());
        let stack = start(config, bin_dir, model, name, optimized).await?;
        for &count in &config.concepts {
            let concepts = &CONCEPTS[..count.clamp(1, CONCEPTS.len())];
            turn += 1;
            let warm = one_turn(&stack, concepts, turn, optimized, config).await?;
            eprintln!("   {count} concept(s) warm-up: {:.0} ms", warm.latency_ms);
            let mut figures = Vec::new();
            for rep in 0..config.reps {
                turn += 1;
                let measured = one_turn(&stack, concepts, turn, optimized, config).await?;
                eprintln!("   {count} concept(s) turn {}: {measured:?}", rep + 1);
                figures.push(measured);
            }
            let m = |f: fn(&TurnFigures) -> f64| median(figures.iter().map(f));
            medians.insert(
                (count, name.clone()),
                BTreeMap::from([
                    ("latency_ms", m(|f| f.latency_ms)),
                    ("vision_encodes", m(|f| f.vision_encodes)),
                    ("prefill_tokens", m(|f| f.prefill_tokens)),
                    ("decode_steps", m(|f| f.decode_steps)),
                    ("generated_tokens", m(|f| f.generated_tokens)),
                    ("upstream_calls", m(|f| f.upstream_calls)),
                    (
                        "detect_decode_ms_per_step",
                        m(|f| f.detect_decode_ms_per_step),
                    ),
                ]),
            );
            raw.push(json!({"config": name, "concepts": count, "turns": figures}));
        }
        stack.stop()?;
    }
    println!(
        "| concepts | config | median turn (s) | vision encodes | prefill tokens | decode steps | tokens generated | large-model calls | optimized / naive |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for ((count, name), figures) in &medians {
        let ratio = match (
            medians.get(&(*count, "optimized".to_string())),
            medians.get(&(*count, "naive".to_string())),
        ) {
            (Some(optimized), Some(naive)) if name == "optimized" => {
                format!("{:.2}", optimized["latency_ms"] / naive["latency_ms"])
            }
            _ => String::new(),
        };
        println!(
            "| {count} | {name} | {:.1} | {} | {} | {} | {} | {} | {ratio} |",
            figures["latency_ms"] / 1000.0,
            figures["vision_encodes"],
            figures["prefill_tokens"],
            figures["decode_steps"],
            figures["generated_tokens"],
            figures["upstream_calls"],
        );
    }
    let bandwidth = decode_bandwidth(model, &medians)?;
    println!("{bandwidth}");
    Ok(json!({
        "model": model,
        "medians": medians
            .iter()
            .map(|((count, name), figures)| json!({"concepts": count, "config": name, "medians": figures}))
            .collect::<Vec<_>>(),
        "turns": raw,
        "decode_bandwidth": bandwidth,
    }))
}

/// Bytes of the weights one decode step reads (everything but the vision tower) over the time
/// per naive detection step (one token per step), against this machine's copy bandwidth.
fn decode_bandwidth(
    model: &Path,
    medians: &BTreeMap<(usize, String), BTreeMap<&str, f64>>,
) -> Result<Value> {
    let weight_bytes = text_weight_bytes(model)?;
    let per_step_ms = median(
        medians
            .iter()
            .filter(|((_, name), _)| name == "naive")
            .map(|(_, figures)| figures["detect_decode_ms_per_step"]),
    );
    let copy = copy_bandwidth_gbps();
    let achieved = weight_bytes as f64 / (per_step_ms / 1000.0) / 1e9;
    Ok(json!({
        "weight_bytes_per_token": weight_bytes,
        "decode_ms_per_token": per_step_ms,
        "achieved_gbps": achieved,
        "copy_gbps": copy,
        "fraction_of_copy": achieved / copy,
    }))
}

/// Sizes of the language-model tensors from the safetensors headers.
fn text_weight_bytes(model: &Path) -> Result<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(model)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let header_len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + header_len])?;
        for (name, tensor) in header.as_object().context("safetensors header")? {
            if name == "__metadata__" || name.contains("visual.") {
                continue;
            }
            let offsets = &tensor["data_offsets"];
            total += offsets[1].as_u64().unwrap_or(0) - offsets[0].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// Median of a few copies of a 256 MiB buffer: read + write bytes per second, in GB/s.
fn copy_bandwidth_gbps() -> f64 {
    let source = vec![1u8; 256 << 20];
    let mut target = vec![0u8; 256 << 20];
    let rates = (0..5).map(|_| {
        let started = Instant::now();
        target.copy_from_slice(&source);
        std::hint::black_box(&target);
        2.0 * source.len() as f64 / started.elapsed().as_secs_f64() / 1e9
    });
    median(rates)
}

async fn detect_only(
    config: &BenchConfig,
    bin_dir: &Path,
    model: &Path,
    count: usize,
) -> Result<Value> {
    let stack = start(config, bin_dir, model, "detect", true).await?;
    let mut latencies = Vec::with_capacity(count);
    let before = metrics(&stack).await?;
    for turn in 0..count {
        let request = json!({"image": fresh_image(turn)?, "concepts": ["bo", "brown-duck"]});
        let started = Instant::now();
        let response = stack
            .edge(reqwest::Method::POST, "/v1/detect")
            .json(&request)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("/v1/detect answered {}", response.status());
        }
        response.bytes().await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let after = metrics(&stack).await?;
    stack.stop()?;
    let steps = delta(&before, &after, "slc_detector_decode_steps_total");
    let tokens = delta(&before, &after, "slc_detector_generated_tokens_total");
    let result = json!({
        "requests": count,
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
        "decode_steps": steps,
        "generated_tokens": tokens,
        "steps_per_token": steps / tokens,
        "steps_saved_share": 1.0 - steps / tokens,
    });
    println!("{result}");
    Ok(result)
}

/// A random checkpoint with the real 3B widths, the tiny tokenizer and Qwen's pixel bounds.
fn make_checkpoint(bin_dir: &Path, dir: &Path, config: &BenchConfig) -> Result<()> {
    if dir.join("config.json").exists() {
        return Ok(());
    }
    eprintln!(
        "== writing a 3B-width random checkpoint to {}",
        dir.display()
    );
    let status = std::process::Command::new(bin_dir.join("slc-detector"))
        .arg("make-checkpoint")
        .arg("--out")
        .arg(dir)
        .args(["--text-layers", &config.text_layers.to_string()])
        .args(["--vision-layers", &config.vision_layers.to_string()])
        .args(["--dtype", &config.checkpoint_dtype])
        .status()?;
    if !status.success() {
        bail!("slc-detector make-checkpoint failed");
    }
    let tiny = engine_fixtures().join("qwen25vl/untied");
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(tiny.join(file), dir.join(file))?;
    }
    let mut preprocessor: Value = serde_json::from_str(&std::fs::read_to_string(
        tiny.join("preprocessor_config.json"),
    )?)?;
    preprocessor["min_pixels"] = json!(3136);
    preprocessor["max_pixels"] = json!(12_845_056);
    std::fs::write(
        dir.join("preprocessor_config.json"),
        serde_json::to_string_pretty(&preprocessor)?,
    )?;
    // The token ids the model gives special meaning must be the tokenizer's.
    let tiny_config: Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("config.json"))?)?;
    let path = dir.join("config.json");
    let mut model_config: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    for key in [
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "bos_token_id",
        "eos_token_id",
    ] {
        if let Some(value) = tiny_config.get(key) {
            model_config[key] = value.clone();
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&model_config)?)?;
    std::fs::copy(
        tiny.join("generation_config.json"),
        dir.join("generation_config.json"),
    )?;
    Ok(())
}

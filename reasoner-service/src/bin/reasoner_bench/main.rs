//! `reasoner-bench`: the reasoner's own overhead under load, and upstream calls per turn.
//!
//! It starts a local OpenAI-compatible upstream that sleeps a fixed time per call, starts the
//! real `slc-reasoner serve` binary (the sibling of this executable) on loopback, warms the
//! identity cache, then runs N concurrent clients, each doing `--rounds` full-mode turns back to
//! back, each turn with its own image. Client starts are spread over `--ramp-ms` (default: one
//! turn's upstream time) so that N turns are in flight in steady state rather than in lockstep;
//! `--ramp-ms 0` sends all first turns in one burst instead.
//!
//! A turn's overhead is its latency at the client minus the time the upstream spent on it (the
//! longest of its concurrent verification calls plus its answer call), so it also includes the
//! bench's own client and upstream HTTP handling on the same CPUs: an upper bound. Each turn
//! carries its own `x-request-id`, which the reasoner forwards on its upstream calls; the
//! upstream books its time per request id. Request bodies are serialized before the clock
//! starts and the upstream reads requests without copying the image, so the bench takes as
//! little of the shared CPUs as it can. The reasoner's and the bench's CPU time per turn (from
//! /proc) are reported too; unlike latency they do not depend on what else the machine is
//! doing.
//!
//! Run in release: `cargo run --release -p slc-reasoner --bin reasoner-bench -- --turns 200`.

mod calls;
mod load;
mod reasoner;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

use reasoner::Reasoner;
use upstream::UpstreamState;

#[derive(Parser, Debug)]
#[command(about = "Load benchmark of slc-reasoner against a sleeping local upstream")]
pub struct BenchConfig {
    /// Concurrent turns in the load run.
    #[arg(long, env = "SLC_BENCH_TURNS", default_value_t = 200)]
    pub turns: usize,
    /// Turns each client runs back to back.
    #[arg(long, env = "SLC_BENCH_ROUNDS", default_value_t = 3)]
    pub rounds: usize,
    /// Client starts are spread over this many milliseconds (default: 2 × upstream sleep).
    #[arg(long, env = "SLC_BENCH_RAMP_MS")]
    pub ramp_ms: Option<u64>,
    /// Concepts per turn in the load run (all reported present, both locations).
    #[arg(long, env = "SLC_BENCH_CONCEPTS", default_value_t = 1)]
    pub concepts: usize,
    /// How long the upstream sleeps per call, in milliseconds.
    #[arg(long, env = "SLC_BENCH_UPSTREAM_SLEEP_MS", default_value_t = 200)]
    pub upstream_sleep_ms: u64,
    /// The reasoner binary; by default the `slc-reasoner` next to this executable.
    #[arg(long, env = "SLC_BENCH_REASONER")]
    pub reasoner: Option<PathBuf>,
    /// Image file sent with every turn (a unique trailer is appended per turn).
    #[arg(long, env = "SLC_BENCH_IMAGE")]
    pub image: Option<PathBuf>,
    /// Skip the calls-per-turn table.
    #[arg(long, default_value_t = false)]
    pub skip_call_counts: bool,
}

pub fn concepts(count: usize, salt: &str) -> Vec<Value> {
    (0..count)
        .map(|index| {
            json!({
                "id": format!("<c{index}>"),
                "description": format!("<c{index}> is a playful dog number {index} {salt}."),
            })
        })
        .collect()
}

pub fn turn_request(image: &str, concepts: &[Value], batched: bool) -> Value {
    let cues: serde_json::Map<String, Value> = concepts
        .iter()
        .map(|concept| {
            (
                concept["id"].as_str().unwrap().to_owned(),
                json!({"present": true, "location-absolute": "center", "location-relative": "next to the sofa"}),
            )
        })
        .collect();
    json!({
        "image": image,
        "question": "What is the dog doing?",
        "concepts": concepts,
        "cues": cues,
        "mode": "full",
        "options": {"batched_verification": batched},
    })
}

pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank]
}

/// The `slc-reasoner` next to this executable unless `--reasoner` names one.
fn reasoner_binary(config: &BenchConfig) -> Result<PathBuf> {
    Ok(match &config.reasoner {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable without a directory")?
            .join("slc-reasoner"),
    })
}

fn image_bytes(config: &BenchConfig) -> Result<Vec<u8>> {
    Ok(match &config.image {
        Some(path) => std::fs::read(path)?,
        None => std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/query.jpg"),
        )
        .context("tests/fixtures/query.jpg")?,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = BenchConfig::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = reasoner_binary(&config)?;
    let image_bytes = image_bytes(&config)?;
    let sleep = Duration::from_millis(config.upstream_sleep_ms);
    let (upstream, upstream_address) = UpstreamState::start(sleep).await?;
    let reasoner = Reasoner::start(&binary, upstream_address, config.turns).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.turns + 16)
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = format!("http://{}", reasoner.address);

    // Warm the identity cache so the load run measures verification and answer turns.
    let load_concepts = concepts(config.concepts, "load");
    let warm = client
        .post(format!("{base}/v1/identities"))
        .json(&json!({"concepts": load_concepts}))
        .send()
        .await?;
    if !warm.status().is_success() {
        bail!("warm-up failed: {}", warm.text().await?);
    }

    let bench = load::Bench {
        config: &config,
        client: &client,
        base: &base,
        upstream: &upstream,
        reasoner: &reasoner,
    };
    let errors = bench.run(&image_bytes, &load_concepts).await?;
    if !config.skip_call_counts {
        calls::print_table(&bench, &image_bytes).await?;
    }
    if !errors.is_empty() {
        bail!("{} turns failed", errors.len());
    }
    Ok(())
}

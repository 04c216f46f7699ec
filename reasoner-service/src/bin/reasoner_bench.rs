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

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine;
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Load benchmark of slc-reasoner against a sleeping local upstream")]
struct BenchConfig {
    /// Concurrent turns in the load run.
    #[arg(long, env = "SLC_BENCH_TURNS", default_value_t = 200)]
    turns: usize,
    /// Turns each client runs back to back.
    #[arg(long, env = "SLC_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Client starts are spread over this many milliseconds (default: 2 × upstream sleep).
    #[arg(long, env = "SLC_BENCH_RAMP_MS")]
    ramp_ms: Option<u64>,
    /// Concepts per turn in the load run (all reported present, both locations).
    #[arg(long, env = "SLC_BENCH_CONCEPTS", default_value_t = 1)]
    concepts: usize,
    /// How long the upstream sleeps per call, in milliseconds.
    #[arg(long, env = "SLC_BENCH_UPSTREAM_SLEEP_MS", default_value_t = 200)]
    upstream_sleep_ms: u64,
    /// The reasoner binary; by default the `slc-reasoner` next to this executable.
    #[arg(long, env = "SLC_BENCH_REASONER")]
    reasoner: Option<PathBuf>,
    /// Image file sent with every turn (a unique trailer is appended per turn).
    #[arg(long, env = "SLC_BENCH_IMAGE")]
    image: Option<PathBuf>,
    /// Skip the calls-per-turn table.
    #[arg(long, default_value_t = false)]
    skip_call_counts: bool,
}

/// Upstream time per turn, keyed by the turn's request id.
#[derive(Default)]
struct TurnUpstreamTime {
    verify_max: Duration,
    answer_total: Duration,
}

#[derive(Clone)]
struct UpstreamState {
    sleep: Duration,
    per_turn: Arc<Mutex<HashMap<String, TurnUpstreamTime>>>,
    calls: Arc<Mutex<u64>>,
}

/// The parts of a chat request the upstream looks at, borrowed from the body: the image URL
/// is skipped, never copied.
#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    messages: Vec<ChatMessage<'a>>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    content: ChatContent<'a>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ChatContent<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<ChatPart<'a>>),
}

#[derive(Deserialize)]
struct ChatPart<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

impl ChatContent<'_> {
    fn text(&self) -> &str {
        match self {
            ChatContent::Text(text) => text,
            ChatContent::Parts(parts) => parts
                .iter()
                .find_map(|part| part.text.as_deref())
                .unwrap_or(""),
        }
    }
}

async fn upstream_handler(
    State(state): State<UpstreamState>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let entered = Instant::now();
    *state.calls.lock().unwrap() += 1;
    let request: ChatRequest = serde_json::from_slice(&body).expect("a chat request");
    let system = request.messages[0].content.text();
    let user = request
        .messages
        .last()
        .expect("a user message")
        .content
        .text();
    let kind = if system.starts_with("You are an information extractor.") {
        "identity"
    } else if system.starts_with("You are a visual verifier.") {
        "verify"
    } else {
        "answer"
    };
    let content = match kind {
        "identity" => {
            let identities: serde_json::Map<String, Value> = user
                .lines()
                .skip(1)
                .filter_map(|line| line.split_once(": "))
                .map(|(id, _)| {
                    (
                        id.to_owned(),
                        json!({"category": "a dog", "attributes": "playful"}),
                    )
                })
                .collect();
            Value::Object(identities).to_string()
        }
        "verify" => vec!["yes"; user.lines().count()].join(" "),
        _ => "A dog is playing.".to_owned(),
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    drop(request);
    drop(body);
    tokio::time::sleep(state.sleep).await;
    let spent = entered.elapsed();
    if let Some(request_id) = request_id {
        let mut per_turn = state.per_turn.lock().unwrap();
        let entry = per_turn.entry(request_id).or_default();
        match kind {
            "verify" => entry.verify_max = entry.verify_max.max(spent),
            _ => entry.answer_total += spent,
        }
    }
    Json(json!({
        "id": "bench",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }))
}

/// User plus system CPU time of a process so far, from /proc, in seconds.
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

struct Reasoner {
    child: Child,
    address: SocketAddr,
    _directory: tempfile::TempDir,
}

impl Reasoner {
    async fn start(binary: &PathBuf, upstream: SocketAddr, max_turns: usize) -> Result<Self> {
        let directory = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(binary)
            .arg("serve")
            .env("SLC_REASONER_BIND", address.to_string())
            .env("SLC_LLM_BASE_URL", format!("http://{upstream}/v1"))
            .env("SLC_LLM_MODEL", "bench-vlm")
            .env(
                "SLC_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("bench.db").display()
                ),
            )
            .env(
                "SLC_REASONER_MAX_CONCURRENT_TURNS",
                (max_turns * 2).to_string(),
            )
            .env_remove("SLC_REASONER_API_KEYS")
            .env_remove("SLC_REASONER_AUDIT_LOG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let reasoner = Self {
            child,
            address,
            _directory: directory,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(format!("http://{address}/healthz")).send().await
                && response.status().is_success()
            {
                return Ok(reasoner);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("slc-reasoner did not become healthy at {address}")
    }

    /// User plus system CPU time of the reasoner process so far, in seconds.
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// Peak resident set size of the reasoner process, from /proc.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Reasoner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn concepts(count: usize, salt: &str) -> Vec<Value> {
    (0..count)
        .map(|index| {
            json!({
                "id": format!("<c{index}>"),
                "description": format!("<c{index}> is a playful dog number {index} {salt}."),
            })
        })
        .collect()
}

fn turn_request(image: &str, concepts: &[Value], batched: bool) -> Value {
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

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank]
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = BenchConfig::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = match &config.reasoner {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable without a directory")?
            .join("slc-reasoner"),
    };
    let image_bytes = match &config.image {
        Some(path) => std::fs::read(path)?,
        None => std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/query.jpg"),
        )
        .context("tests/fixtures/query.jpg")?,
    };

    let state = UpstreamState {
        sleep: Duration::from_millis(config.upstream_sleep_ms),
        per_turn: Arc::default(),
        calls: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_address = listener.local_addr()?;
    let router = axum::Router::new()
        .route("/v1/chat/completions", post(upstream_handler))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let reasoner = Reasoner::start(&binary, upstream_address, config.turns).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.turns + 16)
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = format!("http://{}", reasoner.address);
    let engine = base64::engine::general_purpose::STANDARD;

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

    // Every turn its own image (a unique trailer after the JPEG), serialized up front.
    let total_turns = config.turns * config.rounds;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..total_turns)
            .map(|turn| {
                let mut bytes = image_bytes.clone();
                bytes.extend_from_slice(format!("bench-turn-{turn:08}").as_bytes());
                let request = turn_request(&engine.encode(&bytes), &load_concepts, false);
                Bytes::from(serde_json::to_vec(&request).expect("a turn serializes"))
            })
            .collect(),
    );
    let ramp = Duration::from_millis(config.ramp_ms.unwrap_or(2 * config.upstream_sleep_ms));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak_in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before = reasoner.cpu_seconds();
    let bench_cpu_before = cpu_seconds_of("self");
    let started = Instant::now();
    let mut handles = Vec::with_capacity(config.turns);
    for client_index in 0..config.turns {
        let client = client.clone();
        let url = format!("{base}/v1/reason");
        let bodies = bodies.clone();
        let in_flight = in_flight.clone();
        let peak_in_flight = peak_in_flight.clone();
        let offset = ramp.mul_f64(client_index as f64 / config.turns as f64);
        let rounds = config.rounds;
        let clients = config.turns;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut results = Vec::with_capacity(rounds);
            for round in 0..rounds {
                let turn = round * clients + client_index;
                let key = format!("bench-turn-{turn:08}");
                let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                peak_in_flight.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
                let result = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-request-id", &key)
                    .body(bodies[turn].clone())
                    .send()
                    .await;
                let outcome = match result {
                    Ok(response) if response.status().is_success() => response
                        .bytes()
                        .await
                        .map(|_| ())
                        .map_err(|error| error.to_string()),
                    Ok(response) => Err(format!("status {}", response.status())),
                    Err(error) => Err(error.to_string()),
                };
                let latency = sent.elapsed();
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                results.push((key, latency, outcome));
            }
            results
        }));
    }
    let mut overheads_ms = Vec::new();
    let mut latencies_ms = Vec::new();
    let mut errors = Vec::new();
    for handle in handles {
        for (key, latency, outcome) in handle.await? {
            match outcome {
                Ok(()) => {
                    let per_turn = state.per_turn.lock().unwrap();
                    let upstream = per_turn
                        .get(&key)
                        .map(|time| time.verify_max + time.answer_total)
                        .unwrap_or_default();
                    latencies_ms.push(latency.as_secs_f64() * 1e3);
                    overheads_ms.push((latency.saturating_sub(upstream)).as_secs_f64() * 1e3);
                }
                Err(error) => errors.push(error),
            }
        }
    }
    let wall = started.elapsed();
    let bench_cpu_per_turn_ms = match (bench_cpu_before, cpu_seconds_of("self")) {
        (Some(before), Some(after)) => (after - before) * 1e3 / total_turns as f64,
        _ => f64::NAN,
    };
    overheads_ms.sort_by(f64::total_cmp);
    latencies_ms.sort_by(f64::total_cmp);
    let cpu_per_turn_ms = match (cpu_before, reasoner.cpu_seconds()) {
        (Some(before), Some(after)) => (after - before) * 1e3 / total_turns as f64,
        _ => f64::NAN,
    };
    println!(
        "load: {} concurrent clients x {} rounds = {} full-mode turns, {} concept(s) each, starts spread over {} ms, upstream sleeps {} ms per call (2 sequential calls per turn)",
        config.turns,
        config.rounds,
        total_turns,
        config.concepts,
        ramp.as_millis(),
        config.upstream_sleep_ms
    );
    println!(
        "  peak turns in flight: {}",
        peak_in_flight.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "  turn latency ms: p50 {:.2}  p99 {:.2}  max {:.2}   wall {:.2} s",
        percentile(&latencies_ms, 0.5),
        percentile(&latencies_ms, 0.99),
        latencies_ms.last().copied().unwrap_or(f64::NAN),
        wall.as_secs_f64()
    );
    println!(
        "  reasoner overhead ms (latency - upstream time): p50 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&overheads_ms, 0.5),
        percentile(&overheads_ms, 0.99),
        overheads_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  reasoner peak RSS: {:.1} MiB",
        reasoner.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    println!("  reasoner CPU per turn: {cpu_per_turn_ms:.3} ms (user + system, /proc)");
    println!("  bench CPU per turn (client + upstream, same cores): {bench_cpu_per_turn_ms:.3} ms");
    println!("  errors: {}", errors.len());
    for error in errors.iter().take(5) {
        println!("    {error}");
    }

    if !config.skip_call_counts {
        println!(
            "upstream calls per turn (full mode, every concept reported present with both locations):"
        );
        println!("  concepts  style        cold cache  warm cache");
        for count in [1, 3, 5] {
            for (style, batched) in [("per-concept", false), ("batched", true)] {
                let fresh = concepts(count, &format!("count-{count}-{style}"));
                let mut calls = Vec::new();
                for turn in 0..2 {
                    let image = engine.encode(&image_bytes);
                    let before = *state.calls.lock().unwrap();
                    let response: Value = client
                        .post(format!("{base}/v1/reason"))
                        .json(&turn_request(&image, &fresh, batched))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let seen = *state.calls.lock().unwrap() - before;
                    let reported = response["upstream"]["calls"].as_u64().context("calls")?;
                    if seen != reported {
                        bail!(
                            "turn {turn}: upstream saw {seen} calls, the response says {reported}"
                        );
                    }
                    calls.push(reported);
                }
                println!(
                    "  {count:>8}  {style:<11}  {:>10}  {:>10}",
                    calls[0], calls[1]
                );
            }
        }
    }
    if !errors.is_empty() {
        bail!("{} turns failed", errors.len());
    }
    Ok(())
}

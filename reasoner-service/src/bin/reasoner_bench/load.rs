//! The load run: N concurrent clients, each doing its rounds of full-mode turns back to back
//! with its own image per turn, then latency, overhead, CPU and RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::body::Bytes;
use base64::Engine;
use serde_json::Value;
use shared_types::REQUEST_ID_HEADER;

use crate::reasoner::{Reasoner, cpu_seconds_of};
use crate::upstream::UpstreamState;
use crate::{BenchConfig, percentile, turn_request};

/// Everything a run needs, borrowed from `main`.
pub struct Bench<'a> {
    pub config: &'a BenchConfig,
    pub client: &'a reqwest::Client,
    /// `http://host:port` of the reasoner.
    pub base: &'a str,
    pub upstream: &'a UpstreamState,
    pub reasoner: &'a Reasoner,
}

/// One turn at the client: its request id, latency and outcome.
type TurnResult = (String, Duration, Result<(), String>);

/// Turns in flight now, and the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Bench<'_> {
    /// Runs the load and prints its report; returns the failed turns' errors.
    pub async fn run(&self, image_bytes: &[u8], concepts: &[Value]) -> Result<Vec<String>> {
        let config = self.config;
        let total_turns = config.turns * config.rounds;
        let bodies = Arc::new(turn_bodies(image_bytes, concepts, total_turns));
        let ramp = Duration::from_millis(config.ramp_ms.unwrap_or(2 * config.upstream_sleep_ms));
        let in_flight = Arc::new(InFlight::default());
        let cpu_before = self.reasoner.cpu_seconds();
        let bench_cpu_before = cpu_seconds_of("self");
        let started = Instant::now();
        let mut handles = Vec::with_capacity(config.turns);
        for client_index in 0..config.turns {
            let offset = ramp.mul_f64(client_index as f64 / config.turns as f64);
            handles.push(tokio::spawn(client_turns(
                self.client.clone(),
                format!("{}/v1/reason", self.base),
                bodies.clone(),
                in_flight.clone(),
                offset,
                (client_index, config.turns, config.rounds),
            )));
        }
        let mut overheads_ms = Vec::new();
        let mut latencies_ms = Vec::new();
        let mut errors = Vec::new();
        for handle in handles {
            for (key, latency, outcome) in handle.await? {
                match outcome {
                    Ok(()) => {
                        let upstream = self.upstream.time_of(&key);
                        latencies_ms.push(latency.as_secs_f64() * 1e3);
                        overheads_ms.push((latency.saturating_sub(upstream)).as_secs_f64() * 1e3);
                    }
                    Err(error) => errors.push(error),
                }
            }
        }
        let wall = started.elapsed();
        let per_turn_ms = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(before), Some(after)) => (after - before) * 1e3 / total_turns as f64,
            _ => f64::NAN,
        };
        overheads_ms.sort_by(f64::total_cmp);
        latencies_ms.sort_by(f64::total_cmp);
        let report = Report {
            ramp,
            peak_in_flight: in_flight.peak.load(Ordering::Relaxed),
            latencies_ms,
            overheads_ms,
            wall,
            cpu_per_turn_ms: per_turn_ms(cpu_before, self.reasoner.cpu_seconds()),
            bench_cpu_per_turn_ms: per_turn_ms(bench_cpu_before, cpu_seconds_of("self")),
        };
        report.print(self.config, self.reasoner, &errors);
        Ok(errors)
    }
}

/// Every turn its own image (a unique trailer after the JPEG), serialized before the clock
/// starts.
fn turn_bodies(image_bytes: &[u8], concepts: &[Value], turns: usize) -> Vec<Bytes> {
    let engine = base64::engine::general_purpose::STANDARD;
    (0..turns)
        .map(|turn| {
            let mut bytes = image_bytes.to_vec();
            bytes.extend_from_slice(format!("bench-turn-{turn:08}").as_bytes());
            let request = turn_request(&engine.encode(&bytes), concepts, false);
            Bytes::from(serde_json::to_vec(&request).expect("a turn serializes"))
        })
        .collect()
}

/// One client: after `offset`, its rounds back to back. `(index, clients, rounds)` place its
/// turns among all of them.
async fn client_turns(
    client: reqwest::Client,
    url: String,
    bodies: Arc<Vec<Bytes>>,
    in_flight: Arc<InFlight>,
    offset: Duration,
    (client_index, clients, rounds): (usize, usize, usize),
) -> Vec<TurnResult> {
    tokio::time::sleep(offset).await;
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let turn = round * clients + client_index;
        let key = format!("bench-turn-{turn:08}");
        let now = in_flight.now.fetch_add(1, Ordering::Relaxed) + 1;
        in_flight.peak.fetch_max(now, Ordering::Relaxed);
        let sent = Instant::now();
        let result = client
            .post(&url)
            .header("content-type", "application/json")
            .header(REQUEST_ID_HEADER, &key)
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
        in_flight.now.fetch_sub(1, Ordering::Relaxed);
        results.push((key, latency, outcome));
    }
    results
}

/// What the load run measured; latencies and overheads sorted.
struct Report {
    ramp: Duration,
    peak_in_flight: usize,
    latencies_ms: Vec<f64>,
    overheads_ms: Vec<f64>,
    wall: Duration,
    cpu_per_turn_ms: f64,
    bench_cpu_per_turn_ms: f64,
}

impl Report {
    fn print(&self, config: &BenchConfig, reasoner: &Reasoner, errors: &[String]) {
        let (latencies_ms, overheads_ms) = (&self.latencies_ms, &self.overheads_ms);
        println!(
            "load: {} concurrent clients x {} rounds = {} full-mode turns, {} concept(s) each, starts spread over {} ms, upstream sleeps {} ms per call (2 sequential calls per turn)",
            config.turns,
            config.rounds,
            config.turns * config.rounds,
            config.concepts,
            self.ramp.as_millis(),
            config.upstream_sleep_ms
        );
        println!("  peak turns in flight: {}", self.peak_in_flight);
        println!(
            "  turn latency ms: p50 {:.2}  p99 {:.2}  max {:.2}   wall {:.2} s",
            percentile(latencies_ms, 0.5),
            percentile(latencies_ms, 0.99),
            latencies_ms.last().copied().unwrap_or(f64::NAN),
            self.wall.as_secs_f64()
        );
        println!(
            "  reasoner overhead ms (latency - upstream time): p50 {:.2}  p99 {:.2}  max {:.2}",
            percentile(overheads_ms, 0.5),
            percentile(overheads_ms, 0.99),
            overheads_ms.last().copied().unwrap_or(f64::NAN)
        );
        println!(
            "  reasoner peak RSS: {:.1} MiB",
            reasoner.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
        );
        println!(
            "  reasoner CPU per turn: {:.3} ms (user + system, /proc)",
            self.cpu_per_turn_ms
        );
        println!(
            "  bench CPU per turn (client + upstream, same cores): {:.3} ms",
            self.bench_cpu_per_turn_ms
        );
        println!("  errors: {}", errors.len());
        for error in errors.iter().take(5) {
            println!("    {error}");
        }
    }
}

//! 500 stalled clients on each real binary (half never finish their request head, half never
//! finish an authorized body) while real requests keep being served at their usual latency.
//! Prints each service's p50 and p99 beside the stallers.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slc_e2e::{APP_KEY, EDGE_TO_REASONER_KEY, Stack, StackOptions};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_slc-demo"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stall(base: &str, post_path: &str, key: &str, count: usize) -> Vec<TcpStream> {
    let address = base.trim_start_matches("http://");
    (0..count)
        .map(|index| {
            let mut stream = TcpStream::connect(address).unwrap();
            let partial = if index % 2 == 0 {
                "GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ".to_string()
            } else {
                format!(
                    "POST {post_path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
                     content-type: application/json\r\ncontent-length: 100000\r\n\r\n{{\"con"
                )
            };
            stream.write_all(partial.as_bytes()).unwrap();
            stream
        })
        .collect()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

#[tokio::test]
async fn five_hundred_stalled_clients_on_each_service_do_not_starve_real_requests() {
    let mut options = StackOptions::new(bin_dir());
    options.log_dir = Some(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e-logs")
            .join("slow"),
    );
    let stack = Stack::start(options).await.expect("starting the stack");
    let targets = [
        (
            "slc-detector",
            stack.edge_url.clone(),
            "/v1/concepts",
            APP_KEY,
        ),
        (
            "slc-reasoner",
            stack.reasoner_url.clone(),
            "/metrics",
            EDGE_TO_REASONER_KEY,
        ),
    ];
    let mut baseline = Vec::new();
    for (_, base, path, key) in &targets {
        baseline.push(latencies(&stack, base, path, key).await);
    }
    let edge_stallers = stall(&stack.edge_url, "/v1/detect", APP_KEY, 500);
    let reasoner_stallers = stall(
        &stack.reasoner_url,
        "/v1/identities",
        EDGE_TO_REASONER_KEY,
        500,
    );
    let started = Instant::now();
    for ((name, base, path, key), alone) in targets.iter().zip(&baseline) {
        let beside = latencies(&stack, base, path, key).await;
        println!(
            "{name}, 200 requests: alone p50 {:?} p99 {:?}; beside 500 stalled clients p50 {:?} p99 {:?} max {:?}",
            percentile(alone, 0.5),
            percentile(alone, 0.99),
            percentile(&beside, 0.5),
            percentile(&beside, 0.99),
            beside[beside.len() - 1]
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the real requests waited for the stallers' 30 s read deadline"
    );
    drop((edge_stallers, reasoner_stallers));
    stack.stop().unwrap();
}

/// 200 requests, half `/healthz` and half `path` with the key, each answered 200; sorted.
async fn latencies(stack: &Stack, base: &str, path: &str, key: &str) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for index in 0..200 {
        let url = if index % 2 == 0 {
            format!("{base}/healthz")
        } else {
            format!("{base}{path}")
        };
        let request = Instant::now();
        let response = stack
            .client
            .get(&url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        latencies.push(request.elapsed());
    }
    latencies.sort();
    latencies
}

//! `--detect-only N`: N `/v1/detect` calls, their p50/p99, and the share of decode steps
//! jump-forward saves.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{BenchConfig, delta, fresh_image, metrics, percentile, start};

pub async fn detect_only(
    config: &BenchConfig,
    bin_dir: &Path,
    model: &Path,
    count: usize,
) -> Result<Value> {
    let started = Instant::now();
    let stack = start(config, bin_dir, model, "detect", true).await?;
    // Start, load, warm-up and the sample concepts' registration.
    let ready_s = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(count);
    let mut responses = Vec::with_capacity(count);
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
            let status = response.status();
            bail!("/v1/detect answered {status}: {}", response.text().await?);
        }
        let body: Value = response.json().await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        responses.push(json!({"usage": body["usage"], "timings": body["timings"]}));
    }
    let after = metrics(&stack).await?;
    let edge_peak_rss_mib = stack.edge_peak_rss_mib();
    stack.stop()?;
    let steps = delta(&before, &after, "slc_detector_decode_steps_total");
    let tokens = delta(&before, &after, "slc_detector_generated_tokens_total");
    let result = json!({
        "requests": count,
        "ready_s": ready_s,
        "edge_peak_rss_mib": edge_peak_rss_mib,
        "responses": responses,
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

//! The calls-per-turn table: for 1, 3 and 5 concepts, per-concept and batched verification,
//! a cold and a warm turn, checked against what the upstream saw.

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::Value;

use crate::load::Bench;
use crate::{concepts, turn_request};

pub async fn print_table(bench: &Bench<'_>, image_bytes: &[u8]) -> Result<()> {
    println!(
        "upstream calls per turn (full mode, every concept reported present with both locations):"
    );
    println!("  concepts  style        cold cache  warm cache");
    let image = base64::engine::general_purpose::STANDARD.encode(image_bytes);
    for count in [1, 3, 5] {
        for (style, batched) in [("per-concept", false), ("batched", true)] {
            let fresh = concepts(count, &format!("count-{count}-{style}"));
            let mut calls = Vec::new();
            for turn in 0..2 {
                let before = bench.upstream.calls();
                let response: Value = bench
                    .client
                    .post(format!("{}/v1/reason", bench.base))
                    .json(&turn_request(&image, &fresh, batched))
                    .send()
                    .await?
                    .json()
                    .await?;
                let seen = bench.upstream.calls() - before;
                let reported = response["upstream"]["calls"].as_u64().context("calls")?;
                if seen != reported {
                    bail!("turn {turn}: upstream saw {seen} calls, the response says {reported}");
                }
                calls.push(reported);
            }
            println!(
                "  {count:>8}  {style:<11}  {:>10}  {:>10}",
                calls[0], calls[1]
            );
        }
    }
    Ok(())
}

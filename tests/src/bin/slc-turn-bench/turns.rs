//! The turn benchmark proper: per configuration and concept count, a warm-up turn and the
//! measured ones, their medians as a Markdown table, and the decode bandwidth.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::bandwidth::decode_bandwidth;
use crate::{BenchConfig, CONCEPTS, TurnFigures, median, one_turn, start};

/// Medians per (concept count, configuration name), by figure.
pub type Medians<'a> = BTreeMap<(usize, String), BTreeMap<&'a str, f64>>;

pub async fn turns(config: &BenchConfig, bin_dir: &Path, model: &Path) -> Result<Value> {
    let mut medians: Medians = BTreeMap::new();
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
    print_medians(&medians);
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

/// The medians as a Markdown table, with optimized/naive latency on the optimized rows.
fn print_medians(medians: &Medians) {
    println!(
        "| concepts | config | median turn (s) | vision encodes | prefill tokens | decode steps | tokens generated | large-model calls | optimized / naive |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for ((count, name), figures) in medians {
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
}

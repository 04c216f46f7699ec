//! `slc-demo` (what `cargo xtask demo` runs): starts the edge and the reasoner on loopback with
//! embedded defaults (SQLite, the tiny checkpoint, the fixture adapter bank, the reasoner using
//! the edge's own model), registers sample concepts, asks a visual and a text-only question,
//! prints each answer with its trace, and stops both services.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};
use slc_e2e::{Stack, StackOptions, fixtures, sample_concepts};

#[derive(Debug, Parser)]
#[command(
    name = "slc-demo",
    about = "Run the SLC service pair end to end on sample data"
)]
struct DemoConfig {
    /// Where slc-detector and slc-reasoner are (default: next to this binary).
    #[arg(long, env = "SLC_DEMO_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Where the two services write their logs.
    #[arg(long, env = "SLC_DEMO_LOG_DIR", default_value = "target/slc-demo-logs")]
    log_dir: PathBuf,
    /// Concepts to register from the sample database (they match the fixture bank's adapters).
    #[arg(
        long,
        env = "SLC_DEMO_CONCEPTS",
        value_delimiter = ',',
        default_value = "bo,brown-duck,dug"
    )]
    concepts: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = DemoConfig::parse();
    let bin_dir = slc_e2e::bin_dir_or_own(config.bin_dir.as_deref())?;
    println!(
        "Starting slc-detector (edge) and slc-reasoner (cloud) from {}",
        bin_dir.display()
    );
    println!("  edge model: tiny random-weight Qwen2.5-VL (engine/tests/fixtures/qwen25vl/untied)");
    println!("  large model: the edge's own /v1/chat/completions (fully local setup)");
    println!("  logs: {}", config.log_dir.display());
    let mut options = StackOptions::new(bin_dir);
    options.log_dir = Some(config.log_dir.clone());
    let stack = Stack::start(options).await?;
    println!(
        "  edge     {}\n  reasoner {}\n",
        stack.edge_url, stack.reasoner_url
    );

    let samples = sample_concepts()?;
    for id in &config.concepts {
        let sample = samples
            .iter()
            .find(|sample| &sample.id == id)
            .with_context(|| format!("no sample concept {id}"))?;
        stack
            .register(
                &sample.id,
                &sample.description,
                std::slice::from_ref(&sample.image),
            )
            .await?;
        println!(
            "Registered <{}> ({}): {}",
            sample.id, sample.category, sample.description
        );
    }

    let photo = fixtures().join("query/bo-on-the-sofa.jpg");
    let image = data_url(&photo)?;
    let visual = json!({
        "image": image,
        "question": "What is <bo> doing in this photo?",
        "concepts": ["bo", "brown-duck"],
        "mode": "full"
    });
    ask(&stack, "Visual question (mode full)", visual).await?;
    let text_only = json!({
        "question": "What colour is the beak of <brown-duck>?",
        "concepts": ["brown-duck"],
        "mode": "full"
    });
    ask(&stack, "Text-only question (appendix D)", text_only).await?;
    let streamed = json!({
        "image": data_url(&photo)?,
        "question": "Where is <bo>?",
        "concepts": ["bo"],
        "mode": "full",
        "stream": true
    });
    ask_streamed(&stack, "Streamed answer (stream: true)", streamed).await?;

    println!(
        "\nThe tiny checkpoint has random weights, so its words are noise; the trace shows the\n\
         real pipeline. See the README (\"Run with real weights\") for Qwen2.5-VL-3B."
    );
    stack.stop()?;
    println!("Both services stopped cleanly.");
    Ok(())
}

fn data_url(path: &PathBuf) -> Result<String> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

async fn ask(stack: &Stack, title: &str, request: Value) -> Result<()> {
    println!("\n=== {title}");
    println!("Q: {}", request["question"].as_str().unwrap_or_default());
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&request)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        anyhow::bail!("/v1/ask answered {status}: {body}");
    }
    print_trace(&body);
    Ok(())
}

/// The streamed turn as it arrives: each event's name and time, the answer's pieces, then the
/// time to the first answer token against the time to the full answer.
async fn ask_streamed(stack: &Stack, title: &str, request: Value) -> Result<()> {
    use futures_util::StreamExt as _;
    println!("\n=== {title}");
    println!("Q: {}", request["question"].as_str().unwrap_or_default());
    let started = std::time::Instant::now();
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&request)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "/v1/ask answered {}",
        response.status()
    );
    let mut parser = slc_serve::sse::SseParser::new(1 << 24);
    let mut body = response.bytes_stream();
    let mut first_delta_ms = None;
    while let Some(chunk) = body.next().await {
        for event in parser.push(&chunk?)? {
            let at_ms = started.elapsed().as_secs_f64() * 1e3;
            let name = event.event.unwrap_or_default();
            let data: Value = serde_json::from_str(&event.data)?;
            match name.as_str() {
                "delta" => {
                    first_delta_ms.get_or_insert(at_ms);
                    println!(
                        "  {at_ms:>7.0} ms  delta {:?}",
                        data["text"].as_str().unwrap_or_default()
                    );
                }
                "done" => {
                    println!("  {at_ms:>7.0} ms  done");
                    let timings = &data["timings"];
                    println!(
                        "Time to first answer token {} ms (edge), full answer {:.0} ms; client saw the first delta at {} ms, done at {at_ms:.0} ms",
                        timings["first_token_ms"]
                            .as_f64()
                            .map_or("-".into(), |ms| format!("{ms:.0}")),
                        timings["total_ms"].as_f64().unwrap_or_default(),
                        first_delta_ms.map_or("-".into(), |ms| format!("{ms:.0}")),
                    );
                }
                "error" => anyhow::bail!("the streamed turn failed: {data}"),
                other => println!("  {at_ms:>7.0} ms  {other}"),
            }
        }
    }
    Ok(())
}

fn print_trace(body: &Value) {
    let reasoning = &body["reasoning"];
    if let Some(detection) = body.get("detection").filter(|d| !d.is_null()) {
        println!("Edge detection (Table 6 prompt, schema-constrained):");
        if let Some(adapter) = detection.get("adapter").filter(|a| !a.is_null()) {
            println!(
                "  adapter {} (cosine similarity {:.3})",
                adapter["name"].as_str().unwrap_or("?"),
                adapter["similarity"].as_f64().unwrap_or(0.0)
            );
        }
        for (id, cue) in detection["cues"].as_object().into_iter().flatten() {
            println!("  {id}: {cue}");
        }
        let usage = &detection["usage"];
        println!(
            "  {} prompt tokens, {} generated in {} decode steps (jump-forward)",
            usage["prompt_tokens"], usage["completion_tokens"], usage["decode_steps"]
        );
    }
    println!("Identities (Table 7):");
    for (id, identity) in reasoning["identities"].as_object().into_iter().flatten() {
        println!(
            "  {id}: category {:?}; attributes {:?}",
            identity["category"].as_str().unwrap_or(""),
            identity["attributes"].as_str().unwrap_or("")
        );
    }
    let verifications = reasoning["verifications"].as_array();
    if verifications.is_some_and(|v| !v.is_empty()) {
        println!("Verification (Table 8):");
        for check in verifications.into_iter().flatten() {
            println!(
                "  {} {}: {:?} -> {}",
                check["concept"].as_str().unwrap_or(""),
                check["about"].as_str().unwrap_or(""),
                check["raw_answer"].as_str().unwrap_or(""),
                check["answer"].as_str().unwrap_or("")
            );
        }
    }
    for (id, action) in reasoning["actions"].as_object().into_iter().flatten() {
        println!("  action for {id}: {action}");
    }
    let upstream = &reasoning["upstream"];
    println!(
        "Large model: {} calls ({} identity cache hits), {} prompt + {} completion tokens",
        upstream["calls"],
        upstream["identity_cache_hits"],
        upstream["prompt_tokens"],
        upstream["completion_tokens"]
    );
    let timings = &body["timings"];
    println!(
        "Timings: detect {:.0} ms, reason {:.0} ms, total {:.0} ms",
        timings["detect_ms"].as_f64().unwrap_or(0.0),
        timings["reason_ms"].as_f64().unwrap_or(0.0),
        timings["total_ms"].as_f64().unwrap_or(0.0)
    );
    println!("A: {}", body["answer"].as_str().unwrap_or(""));
}

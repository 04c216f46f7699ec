//! Streamed answers end to end: both real binaries, the edge's detection on the tiny model,
//! and a scripted large model (`slc_e2e::scripted_llm`) that writes its answer slowly, so the
//! test can see the app's first `delta` arrive while the large model is still writing, and
//! see the large model's connection close when the app leaves.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use slc_e2e::scripted_llm::ScriptedLlm;
use slc_e2e::{Stack, StackOptions, fixtures, sample_concepts};
use slc_serve::sse::SseParser;

async fn start(llm: &ScriptedLlm) -> Stack {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_slc-demo")).parent().unwrap();
    let mut options = StackOptions::new(bin_dir.to_path_buf());
    options.llm_url = Some(llm.url.clone());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("streaming").replace("::", "-");
    options.log_dir = Some(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e-logs")
            .join(test),
    );
    let stack = Stack::start(options).await.expect("starting the stack");
    let samples = sample_concepts().unwrap();
    let bo = samples.iter().find(|sample| sample.id == "bo").unwrap();
    stack
        .register(&bo.id, &bo.description, std::slice::from_ref(&bo.image))
        .await
        .unwrap();
    stack
}

fn streamed_ask() -> Value {
    let image = std::fs::read(fixtures().join("query/bo-on-the-sofa.jpg")).unwrap();
    use base64::Engine as _;
    json!({
        "image": base64::engine::general_purpose::STANDARD.encode(image),
        "question": "What is <bo> doing?",
        "concepts": ["bo"],
        "mode": "full",
        "pseudonymize": true,
        "stream": true
    })
}

/// The app's events with their arrival times, until the stream ends or `stop` says so.
async fn read_events(
    response: reqwest::Response,
    stop: impl Fn(&str) -> bool,
) -> Vec<(String, Value, Instant)> {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new(1 << 24);
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        for event in parser.push(&chunk.unwrap()).unwrap() {
            let name = event.event.unwrap_or_default();
            let done = stop(&name);
            events.push((
                name,
                serde_json::from_str(&event.data).unwrap(),
                Instant::now(),
            ));
            if done {
                return events;
            }
        }
    }
    events
}

#[tokio::test]
async fn the_first_delta_reaches_the_app_before_the_large_model_finishes() {
    // `<c1>` (the pseudonym of `<bo>`) split across two pieces: the app still reads `<bo>`.
    let pieces = ["<c", "1> is ", "lying ", "on the ", "sofa."];
    let llm = ScriptedLlm::start(&pieces, Duration::from_millis(400))
        .await
        .unwrap();
    let stack = start(&llm).await;
    let asked = Instant::now();
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&streamed_ask())
        .send()
        .await
        .unwrap();
    let events = read_events(response, |_| false).await;
    let names: Vec<&str> = events.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names[..2], ["detection", "verification"], "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert!(
        names[2..names.len() - 1]
            .iter()
            .all(|name| *name == "delta")
    );
    let text: String = events
        .iter()
        .filter(|(name, _, _)| name == "delta")
        .map(|(_, data, _)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "<bo> is lying on the sofa.");
    let done = &events.last().unwrap().1;
    assert_eq!(done["answer"], text);
    assert!(
        events[1].1["refined_cues"].get("<bo>").is_some(),
        "{}",
        events[1].1
    );
    let log = llm.log();
    let finished = *log.finished.first().expect("the large model finished");
    let first_delta = events
        .iter()
        .find(|(name, _, _)| name == "delta")
        .unwrap()
        .2;
    assert!(
        first_delta < finished,
        "the first delta came after the large model finished"
    );
    // The cloud saw the alias, never the id.
    let answer_call = log.requests.iter().find(|r| r["stream"] == true).unwrap();
    assert!(!answer_call.to_string().contains("<bo>"), "{answer_call}");
    let first_token_ms = done["timings"]["first_token_ms"].as_f64().unwrap();
    let total_ms = done["timings"]["total_ms"].as_f64().unwrap();
    println!(
        "time to first answer token {first_token_ms:.0} ms, full answer {total_ms:.0} ms \
         (client-side: first delta after {:.0} ms)",
        first_delta.duration_since(asked).as_secs_f64() * 1e3
    );
    assert!(first_token_ms < total_ms);
    let metrics = stack
        .edge(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("slc_detector_ask_first_answer_token_seconds_count 1"),
        "{metrics}"
    );
    stack.stop().unwrap();
}

#[tokio::test]
async fn an_app_that_leaves_closes_the_large_models_stream() {
    let pieces: Vec<String> = (0..300).map(|n| format!("word{n} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let llm = ScriptedLlm::start(&pieces, Duration::from_millis(100))
        .await
        .unwrap();
    let stack = start(&llm).await;
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&streamed_ask())
        .send()
        .await
        .unwrap();
    let events = read_events(response, |name| name == "delta").await;
    assert_eq!(events.last().unwrap().0, "delta");
    let left = Instant::now();
    // The response (and its connection) dropped here: the app has left.
    let deadline = left + Duration::from_secs(10);
    while llm.log().closed_early.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the large model's stream was not closed within 10 s of the app leaving"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(llm.log().finished.is_empty());
    stack.stop().unwrap();
}

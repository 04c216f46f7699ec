//! `/v1/reason` with `stream: true` against a scripted streaming large model: deltas relayed
//! as they arrive, the whole response at the end, a typed `error` event for a stream that
//! stalls, breaks off or never ends, and a client that leaves closing the upstream call.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use slc_serve::sse::{SseEvent, SseParser};

use crate::helpers::{query_image_base64, spawn_config};
use crate::stream_upstream::{Ending, StreamScript, StreamingUpstream};
use slc_reasoner::prompts::{IDENTITY_SYSTEM_PROMPT, VERIFICATION_SYSTEM_PROMPT};

/// Identities and "yes" to every verification question.
fn plain(request: &Value) -> String {
    match request["messages"][0]["content"].as_str() {
        Some(IDENTITY_SYSTEM_PROMPT) => {
            json!({"<bo>": {"category": "a dog", "attributes": "fluffy"}}).to_string()
        }
        Some(VERIFICATION_SYSTEM_PROMPT) => "Q1. Yes".into(),
        _ => "unexpected plain answer call".into(),
    }
}

fn script(pieces: &[&str], gap_ms: u64, ending: Ending) -> StreamScript {
    StreamScript {
        pieces: pieces.iter().map(|piece| piece.to_string()).collect(),
        gap: Duration::from_millis(gap_ms),
        ending,
    }
}

/// A reasoner on `upstream` with these stream bounds, and its database's directory.
async fn reasoner(
    upstream: &StreamingUpstream,
    attempt_ms: u64,
    deadline_ms: u64,
) -> (crate::helpers::TestApp, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let database = crate::helpers::sqlite_url(&directory.path().join("reasoner.db"));
    let mut config = crate::helpers::base_config(&upstream.base_url(), &database);
    config.llm_attempt_timeout_ms = attempt_ms;
    config.llm_call_deadline_ms = deadline_ms;
    (spawn_config(config).await, directory)
}

fn turn() -> Value {
    json!({
        "image": query_image_base64(),
        "question": "What is <bo> doing?",
        "concepts": [{"id": "<bo>", "description": "<bo> is a fluffy dog."}],
        "cues": {"<bo>": {"present": true, "location-absolute": "center"}},
        "mode": "full",
        "stream": true,
    })
}

/// Events as they arrive, each with its arrival time.
struct EventReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
}

impl EventReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: response.bytes_stream().boxed(),
            parser: SseParser::new(1 << 24),
            ready: Default::default(),
        }
    }

    async fn next(&mut self) -> Option<(String, Value, Instant)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                let data = serde_json::from_str(&event.data).unwrap();
                return Some((event.event.unwrap_or_default(), data, Instant::now()));
            }
            let chunk = self.body.next().await?.unwrap();
            self.ready.extend(self.parser.push(&chunk).unwrap());
        }
    }

    async fn all(mut self) -> Vec<(String, Value, Instant)> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

async fn stream_turn(app: &crate::helpers::TestApp) -> EventReader {
    let response = app
        .client
        .post(app.url("/v1/reason"))
        .json(&turn())
        .send()
        .await
        .unwrap();
    EventReader::new(response)
}

#[tokio::test]
async fn deltas_arrive_before_the_upstream_finishes_and_done_has_the_whole_turn() {
    let pieces = ["<bo> is ", "chasing ", "a ball", "."];
    let upstream = StreamingUpstream::start(script(&pieces, 150, Ending::Done), plain).await;
    let (app, _directory) = reasoner(&upstream, 5_000, 20_000).await;
    let events = stream_turn(&app).await.all().await;
    let names: Vec<&str> = events.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["verification", "delta", "delta", "delta", "delta", "done"],
        "{events:?}"
    );
    assert_eq!(events[0].1["refined_cues"]["<bo>"]["present"], true);
    let text: String = events
        .iter()
        .filter(|(name, _, _)| name == "delta")
        .map(|(_, data, _)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, pieces.concat());
    let streams = upstream.streams();
    assert_eq!(streams.len(), 1, "only the answer is streamed");
    let finished = streams[0].finished.expect("the upstream finished");
    assert!(
        events[1].2 < finished,
        "the first delta came {:?} before the upstream finished",
        finished.checked_duration_since(events[1].2)
    );
    assert_eq!(streams[0].request["stream"], true);
    assert_eq!(streams[0].request["stream_options"]["include_usage"], true);
    let done = &events.last().unwrap().1;
    assert_eq!(done["answer"], pieces.concat());
    assert_eq!(done["actions"]["<bo>"], "kept");
    // Usage from the last chunk: identity (10) + verify (10) + the stream's 321.
    assert_eq!(done["upstream"]["prompt_tokens"], 341);
    let first_token_ms = done["timings"]["first_token_ms"].as_f64().unwrap();
    assert!(first_token_ms < done["timings"]["total_ms"].as_f64().unwrap());
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_reasoner_answer_first_token_seconds_count 1"),
        "{metrics}"
    );
}

/// The stream's failures, each a typed `error` event after the text that did arrive.
#[tokio::test]
async fn a_stalled_broken_or_endless_stream_ends_in_a_typed_error_event() {
    for (ending, attempt_ms, deadline_ms, status, kind) in [
        (Ending::Stall, 400, 20_000, 504, "upstream_stalled"),
        (Ending::BreakOff, 5_000, 20_000, 502, "upstream_interrupted"),
        (
            Ending::Forever,
            5_000,
            1_500,
            504,
            "upstream_deadline_exceeded",
        ),
    ] {
        let upstream = StreamingUpstream::start(script(&["one ", "two "], 30, ending), plain).await;
        let (app, _directory) = reasoner(&upstream, attempt_ms, deadline_ms).await;
        let started = Instant::now();
        let events = stream_turn(&app).await.all().await;
        let (name, data, _) = events.last().unwrap();
        assert_eq!(name, "error", "{ending:?}: {events:?}");
        assert_eq!(data["status"], status, "{ending:?}: {data}");
        assert_eq!(data["error"]["type"], kind, "{ending:?}: {data}");
        assert!(
            events.iter().any(|(name, _, _)| name == "delta"),
            "{ending:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{ending:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream_stream() {
    let pieces: Vec<String> = (0..200).map(|n| format!("word{n} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let upstream = StreamingUpstream::start(script(&pieces, 50, Ending::Done), plain).await;
    let (app, _directory) = reasoner(&upstream, 5_000, 60_000).await;
    let mut reader = stream_turn(&app).await;
    loop {
        let (name, _, _) = reader.next().await.unwrap();
        if name == "delta" {
            break;
        }
    }
    let left = Instant::now();
    drop(reader);
    let closed = upstream
        .wait_closed_early(Duration::from_secs(5))
        .await
        .expect("the upstream saw its connection close");
    assert!(closed >= left);
    assert!(upstream.streams()[0].finished.is_none());
    // The turn's slot is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.state.metrics.turns_in_flight.get() != 0 {
        assert!(
            Instant::now() < deadline,
            "the turn still counts as in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

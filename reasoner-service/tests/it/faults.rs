//! Upstream faults end in a clear status, never a hang: Retry-After honoured, a timeout, a
//! 500 storm exhausting the retry budget, a 4xx not retried, a deadline, unusable identity
//! output falling back to the authors' default.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::helpers::*;
use crate::paper::*;

fn identities_request() -> serde_json::Value {
    json!({"concepts": [{"id": "<butin>", "description": FIGURE_9_BUTIN}]})
}

const GOOD_IDENTITY: &str = r#"{"<butin>": {"category": "a husky", "attributes": "fluffy"}}"#;

#[tokio::test]
async fn retry_after_is_honoured_then_the_call_succeeds() {
    let upstream = ScriptedUpstream::start(|_, index| match index {
        0 => Reply::status(429).retry_after("1"),
        _ => Reply::content(GOOD_IDENTITY),
    })
    .await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 200, "{body}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].received - requests[0].received;
    // The backoff alone would be 10-50 ms; Retry-After says one second.
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    assert_eq!(body["upstream"]["retries"], 1);
    assert_eq!(body["upstream"]["calls"], 1);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_reasoner_upstream_retries_total{kind=\"identity\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    // Two seconds ahead when the 503 is sent; HTTP-dates have whole seconds, so the wait the
    // reasoner owes is between one and two seconds.
    let upstream = ScriptedUpstream::start(|_, index| match index {
        0 => Reply::status(503).retry_after(&httpdate::fmt_http_date(
            SystemTime::now() + Duration::from_secs(2),
        )),
        _ => Reply::content(GOOD_IDENTITY),
    })
    .await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 200, "{body}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].received - requests[0].received;
    // The backoff alone would be 10-50 ms.
    assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(body["upstream"]["retries"], 1);
}

#[tokio::test]
async fn retry_after_as_a_past_http_date_retries_at_once() {
    let upstream = ScriptedUpstream::start(|_, index| match index {
        0 => Reply::status(429).retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
        _ => Reply::content(GOOD_IDENTITY),
    })
    .await;
    // A backoff far longer than the test would tolerate: only the past date makes it quick.
    let app = spawn_app_with(&upstream, |config| {
        config.llm_min_backoff_ms = 20_000;
        config.llm_max_backoff_ms = 20_000;
    })
    .await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 200, "{body}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].received - requests[0].received;
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504_after_the_retries() {
    let upstream = ScriptedUpstream::start(|_, _| {
        Reply::content(GOOD_IDENTITY).delayed(Duration::from_secs(3))
    })
    .await;
    let app = spawn_app_with(&upstream, |config| {
        config.llm_attempt_timeout_ms = 200;
        config.llm_max_retries = 1;
    })
    .await;
    let started = Instant::now();
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(error_type(&body), "upstream_timeout");
    assert_eq!(upstream.requests().len(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_500_storm_exhausts_the_retry_budget_with_502() {
    let upstream = ScriptedUpstream::start(|_, _| Reply::status(500)).await;
    let app = spawn_app_with(&upstream, |config| config.llm_max_retries = 3).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_type(&body), "upstream_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("500") && message.contains("4 attempts"),
        "{message}"
    );
    assert!(!message.contains("scripted"), "{message}");
    assert_eq!(
        upstream.requests().len(),
        4,
        "one attempt plus three retries"
    );
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains(
            "slc_reasoner_upstream_calls_total{kind=\"identity\",outcome=\"unavailable\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let upstream = ScriptedUpstream::start(|_, _| Reply::status(400)).await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_type(&body), "upstream_rejected");
    // The status is the client's to know; the large model's own message stays in the log.
    assert_eq!(
        body["error"]["message"],
        "the large model rejected the request (HTTP 400)"
    );
    assert!(!body.to_string().contains("scripted"), "{body}");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_overall_deadline_cuts_a_long_retry_after() {
    let upstream = ScriptedUpstream::start(|_, _| Reply::status(503).retry_after("10")).await;
    let app = spawn_app_with(&upstream, |config| config.llm_call_deadline_ms = 500).await;
    let started = Instant::now();
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(error_type(&body), "upstream_deadline_exceeded");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // Bind then drop a listener: nothing answers on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = ScriptedUpstream::start(|_, _| Reply::status(500)).await;
    let app = spawn_app_with(&upstream, |config| {
        config.llm_base_url = format!("http://127.0.0.1:{port}/v1");
        config.llm_max_retries = 1;
    })
    .await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_type(&body), "upstream_unreachable");
    // Neither the large model's address nor the transport error reaches the body.
    assert_eq!(
        body["error"]["message"],
        "the large model could not be reached after 2 attempts"
    );
    assert!(!body.to_string().contains(&port.to_string()), "{body}");
}

#[tokio::test]
async fn a_non_completion_body_is_a_502_without_retry() {
    let upstream = ScriptedUpstream::start(|_, _| {
        let mut reply = Reply::content("x");
        reply.body = json!({"unexpected": true});
        reply
    })
    .await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_type(&body), "upstream_bad_response");
    assert_eq!(
        body["error"]["message"],
        "the large model's response could not be read"
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn malformed_identity_json_falls_back_is_not_stored_and_is_not_asked_again_soon() {
    let upstream = ScriptedUpstream::start(|request, _| match request.kind() {
        "identity" => Reply::content("Sure! Here is the JSON: {\"<butin>\": {\"category\": "),
        "verify" => Reply::content("yes yes"),
        _ => Reply::content("Yes."),
    })
    .await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fallbacks"], json!(["<butin>"]));
    assert_eq!(
        body["identities"]["<butin>"],
        json!({"category": "A character or object.", "attributes": FIGURE_9_BUTIN})
    );

    // The turn goes on with the fallback's category in the questions.
    let (status, body) = app
        .post(
            "/v1/reason",
            &json!({
                "image": query_image_base64(),
                "question": "Can you check if <butin> is in this photo?",
                "concepts": [{"id": "<butin>", "description": FIGURE_9_BUTIN}],
                "cues": {"<butin>": {"present": true, "location-absolute": "top-left quadrant", "location-relative": "on top of the person's lap"}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let verify = &upstream.requests_of("verify")[0];
    assert!(
        verify
            .user_text()
            .starts_with("Q1. Do you see A character or object. at top-left quadrant"),
        "{}",
        verify.user_text()
    );
    // Not stored, but remembered for a while: the second request did not ask again.
    assert_eq!(upstream.requests_of("identity").len(), 1);
    assert_eq!(
        body["identities"]["<butin>"]["category"],
        "A character or object."
    );
    assert_eq!(app.state.reasoner.cache.row_count().await.unwrap(), 0);
}

/// With `SLC_IDENTITY_FALLBACK_RETRY_SECS=0` a fallen-back identity is asked for on every turn.
#[tokio::test]
async fn a_zero_fallback_retry_asks_again_every_time() {
    let upstream = ScriptedUpstream::start(|request, _| match request.kind() {
        "identity" => Reply::content("not json"),
        _ => Reply::content("Yes."),
    })
    .await;
    let app =
        crate::helpers::spawn_app_with(&upstream, |config| config.identity_fallback_retry_secs = 0)
            .await;
    for _ in 0..2 {
        let (status, body) = app.post("/v1/identities", &identities_request()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["fallbacks"], json!(["<butin>"]));
    }
    assert_eq!(upstream.requests_of("identity").len(), 2);
}

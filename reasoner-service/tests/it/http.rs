//! The HTTP surface over a socket: bearer auth, the concurrency limit, typed 4xx for bad
//! input, metrics, request ids on upstream calls, health and docs. Socket-free routing and
//! middleware tests are in `status.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const BO: &str = "<bo> is a cute golden retriever puppy with a playful expression.";

fn identities_request() -> Value {
    json!({"concepts": [{"id": "<bo>", "description": BO}]})
}

async fn good_upstream() -> ScriptedUpstream {
    ScriptedUpstream::answering(
        &[("<bo>", "a golden retriever puppy", "playful")],
        |_| "yes yes".into(),
        "ok",
    )
    .await
}

#[tokio::test]
async fn turn_endpoints_need_a_configured_bearer_key() {
    let upstream = good_upstream().await;
    let app = spawn_app_with(&upstream, |config| {
        config.api_keys = vec!["edge-key-1".into(), "edge-key-2".into()];
    })
    .await;
    let url = app.url("/v1/identities");
    let cases: &[(Option<&str>, u16)] = &[
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Bearer edge-key-1x"), 401),
        (Some("Basic edge-key-1"), 401),
        (Some("Bearer edge-key-1"), 200),
        (Some("Bearer edge-key-2"), 200),
    ];
    for (authorization, expected) in cases {
        let mut request = app.client.post(&url).json(&identities_request());
        if let Some(authorization) = authorization {
            request = request.header("authorization", *authorization);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), *expected, "{authorization:?}");
        if *expected == 401 {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(error_type(&body), "unauthorized");
        }
    }
    // Only the two authorized requests reached the model. Each key is its own identity cache
    // scope, so the second key's request with the same description is a miss as well.
    assert_eq!(upstream.requests().len(), 2);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (status, _) = app.get_text(open).await;
        assert_eq!(status, 200, "{open}");
    }
}

/// The edge's `x-slc-deadline-ms` ends a turn whose large model is slower: 504 at the
/// deadline, not after the model's own timeouts.
#[tokio::test]
async fn a_turn_ends_at_the_callers_deadline() {
    let upstream = ScriptedUpstream::start(|_, _| {
        Reply::content(r#"{"<bo>": {"category": "a dog", "attributes": "x"}}"#)
            .delayed(Duration::from_secs(5))
    })
    .await;
    let app = spawn_app(&upstream).await;
    let started = std::time::Instant::now();
    let response = app
        .client
        .post(app.url("/v1/identities"))
        .header(shared_types::DEADLINE_MS_HEADER, "300")
        .json(&identities_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_type(&body), "upstream_deadline_exceeded");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

/// Clients that trickle their bodies hold connections, not turns: with one turn allowed and
/// five bodies stalled half-way, a real turn still runs, and each stalled client gets 408.
#[tokio::test]
async fn slow_bodies_take_no_turn_permit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = good_upstream().await;
    let app = spawn_app_with(&upstream, |config| {
        config.max_concurrent_turns = 1;
        config.read_timeout_secs = 2.0;
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        let head = "POST /v1/identities HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                    authorization: Bearer edge-key\r\ncontent-length: 500\r\n\r\n{\"concepts\": [";
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 200, "a stalled body held the only turn: {body}");
    for mut stream in stalled {
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("request_timeout"), "{reply}");
    }
    app.stop().await;
}

#[tokio::test]
async fn turns_over_the_concurrency_limit_get_429_at_once() {
    let upstream = ScriptedUpstream::start(|_, _| {
        Reply::content(r#"{"<bo>": {"category": "a dog", "attributes": "x"}}"#)
            .delayed(Duration::from_millis(1500))
    })
    .await;
    let app = spawn_app_with(&upstream, |config| config.max_concurrent_turns = 2).await;
    let app = std::sync::Arc::new(app);
    let mut slow = Vec::new();
    for index in 0..2 {
        let app = app.clone();
        slow.push(tokio::spawn(async move {
            app.post(
                "/v1/identities",
                &json!({"concepts": [{"id": "<bo>", "description": format!("{BO} {index}")}]}),
            )
            .await
        }));
    }
    // Wait until both turns are waiting on the model, then one more.
    while upstream.requests().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let (status, body) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_type(&body), "too_many_turns");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    for turn in slow {
        let (status, body) = turn.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(upstream.requests().len(), 2);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_reasoner_turns_rejected_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slc_reasoner_turns_in_flight 0"),
        "{metrics}"
    );
    // Capacity is back.
    let (status, _) = app.post("/v1/identities", &identities_request()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_input_gets_a_typed_4xx() {
    let upstream = good_upstream().await;
    let app = spawn_app_with(&upstream, |config| config.max_body_bytes = 64 * 1024).await;
    let reason = app.url("/v1/reason");
    let send = |body: String, content_type: &'static str| {
        let client = app.client.clone();
        let reason = reason.clone();
        async move {
            let response = client
                .post(&reason)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("a JSON error body");
            (status, error_type(&body))
        }
    };
    let valid = json!({"question": "What?", "concepts": [{"id": "<bo>", "description": BO}]});
    let with = |patch: Value| {
        let mut request = valid.clone();
        for (key, value) in patch.as_object().unwrap() {
            request[key] = value.clone();
        }
        request.to_string()
    };
    let json_type = "application/json";
    let cases: Vec<(&str, String, &'static str, u16, &str)> = vec![
        (
            "bad JSON",
            "{\"question\": ".into(),
            json_type,
            400,
            "invalid_json",
        ),
        (
            "wrong content type",
            valid.to_string(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "missing field",
            json!({"question": "What?"}).to_string(),
            json_type,
            422,
            "invalid_request",
        ),
        (
            "reference images are not a field",
            with(json!({"reference_images": ["abc"]})),
            json_type,
            422,
            "invalid_request",
        ),
        (
            "embeddings are not a field",
            with(json!({"concepts": [{"id": "<bo>", "description": BO, "embedding": [0.1]}]})),
            json_type,
            422,
            "invalid_request",
        ),
        (
            "empty question",
            with(json!({"question": "  "})),
            json_type,
            422,
            "empty_question",
        ),
        (
            "unbracketed id",
            with(json!({"concepts": [{"id": "bo", "description": BO}]})),
            json_type,
            422,
            "invalid_concept_id",
        ),
        (
            "duplicate id",
            with(
                json!({"concepts": [{"id": "<bo>", "description": BO}, {"id": "<bo>", "description": BO}]}),
            ),
            json_type,
            422,
            "duplicate_concept",
        ),
        (
            "empty description",
            with(json!({"concepts": [{"id": "<bo>", "description": ""}]})),
            json_type,
            422,
            "empty_description",
        ),
        (
            "unknown mode",
            with(json!({"mode": "turbo"})),
            json_type,
            422,
            "invalid_request",
        ),
        (
            "cue for an unknown concept",
            with(json!({"image": query_image_base64(), "cues": {"<rex>": {"present": true}}})),
            json_type,
            422,
            "unknown_concept",
        ),
        (
            "image without cues in full mode",
            with(json!({"image": query_image_base64()})),
            json_type,
            422,
            "missing_cues",
        ),
        (
            "cues without an image",
            with(json!({"cues": {"<bo>": {"present": true}}})),
            json_type,
            422,
            "cues_without_image",
        ),
        (
            "not an image",
            with(json!({"image": "aGVsbG8gd29ybGQ=", "cues": {}})),
            json_type,
            422,
            "invalid_image",
        ),
        (
            "not base64",
            with(json!({"image": "%%%", "cues": {}})),
            json_type,
            422,
            "invalid_image",
        ),
        (
            "oversize body",
            with(json!({"question": "x".repeat(128 * 1024)})),
            json_type,
            413,
            "payload_too_large",
        ),
    ];
    for (name, body, content_type, status, kind) in cases {
        assert_eq!(
            send(body, content_type).await,
            (status, kind.to_owned()),
            "{name}"
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "bad input never reaches the model"
    );

    let response = app.client.get(app.url("/v1/nowhere")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(error_type(&response.json().await.unwrap()), "not_found");
    let response = app.client.get(app.url("/v1/reason")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        error_type(&response.json().await.unwrap()),
        "method_not_allowed"
    );
}

#[tokio::test]
async fn the_request_id_goes_on_every_upstream_call_of_the_turn() {
    let upstream = good_upstream().await;
    let app = spawn_app(&upstream).await;
    let turn = json!({
        "image": query_image_base64(),
        "question": "What is <bo> doing?",
        "concepts": [{"id": "<bo>", "description": BO}],
        "cues": {"<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"}},
    });
    let response = app
        .client
        .post(app.url("/v1/reason"))
        .header("x-request-id", "edge-turn-42")
        .json(&turn)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let requests = upstream.requests();
    let kinds: Vec<&str> = requests.iter().map(Recorded::kind).collect();
    assert_eq!(kinds, ["identity", "verify", "answer"]);
    for request in &requests {
        assert_eq!(
            request.request_id.as_deref(),
            Some("edge-turn-42"),
            "{}",
            request.kind()
        );
        // The image is spliced in as a separate buffer, yet the body goes with an exact
        // length, not chunked: some OpenAI-compatible servers refuse chunked requests.
        assert_eq!(
            request.content_length,
            Some(request.body_bytes as u64),
            "{}",
            request.kind()
        );
    }

    // Without one, the id the reasoner made up is the one it forwards and returns.
    let response = app
        .client
        .post(app.url("/v1/reason"))
        .json(&turn)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(generated.starts_with("slc-reasoner-"), "{generated}");
    let later = &upstream.requests()[requests.len()..];
    // The identity is cached now: verify and answer only.
    assert_eq!(later.len(), 2);
    for request in later {
        assert_eq!(request.request_id.as_deref(), Some(generated.as_str()));
    }
}

#[tokio::test]
async fn metrics_count_calls_cache_hits_and_reflection_outcomes() {
    let upstream = ScriptedUpstream::answering(
        &[
            ("<bo>", "a golden retriever puppy", "playful"),
            ("<mam>", "a grey cat", "sleepy"),
        ],
        |prompt| {
            if prompt.contains("puppy") {
                "yes no".into()
            } else {
                "no no".into()
            }
        },
        "ok",
    )
    .await;
    let app = spawn_app(&upstream).await;
    let request = json!({
        "image": query_image_base64(),
        "question": "Who is here?",
        "concepts": [
            {"id": "<bo>", "description": BO},
            {"id": "<mam>", "description": "<mam> is a grey cat."},
        ],
        "cues": {
            "<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"},
            "<mam>": {"present": true, "location-absolute": "left", "location-relative": "under the table"},
        },
    });
    for _ in 0..2 {
        let (status, body) = app.post("/v1/reason", &request).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, metrics) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        // One single-concept identity call per concept on the first turn, none on the second.
        "slc_reasoner_upstream_calls_total{kind=\"identity\",outcome=\"ok\"} 2",
        "slc_reasoner_upstream_calls_total{kind=\"verify\",outcome=\"ok\"} 4",
        "slc_reasoner_upstream_calls_total{kind=\"answer\",outcome=\"ok\"} 2",
        "slc_reasoner_identity_cache_hits_total 2",
        "slc_reasoner_identity_cache_misses_total 2",
        "slc_reasoner_reflection_outcomes_total{action=\"dropped_location_relative\"} 2",
        "slc_reasoner_reflection_outcomes_total{action=\"suppressed\"} 2",
        "slc_reasoner_turns_total{endpoint=\"/v1/reason\",status=\"200\"} 2",
        "slc_reasoner_upstream_call_duration_seconds_count{kind=\"verify\"} 4",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn health_readiness_and_offline_docs() {
    let upstream = good_upstream().await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.get_text("/healthz").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "{\"status\":\"ok\"}")
    );
    let (status, body) = app.get_text("/readyz").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "{\"status\":\"ready\"}")
    );
    let (status, spec) = app.get_text("/openapi.json").await;
    assert_eq!(status, 200);
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert!(spec["paths"]["/v1/reason"]["post"].is_object());
    // The UI is served from the binary (vendored), not from a CDN.
    let (status, page) = app.get_text("/docs/").await;
    assert_eq!(status, 200);
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains("cdn.") && !page.contains("unpkg"), "{page}");
    let (status, script) = app.get_text("/docs/swagger-ui-bundle.js").await;
    assert_eq!(status, 200);
    assert!(script.len() > 100_000);

    // Readiness follows the database.
    app.state.reasoner.cache.close().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        error_type(&response.json().await.unwrap()),
        "cache_unavailable"
    );
}

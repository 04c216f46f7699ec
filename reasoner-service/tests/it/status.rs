//! The status policy both services share (see `error.rs`), as one table: every error variant,
//! and the request that produces it, with its status and error type. Requests go through
//! `Router::oneshot`: routing, extractors and middleware need no socket.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shared_types::limits::{MAX_CUE_TEXT_CHARS, MAX_DESCRIPTION_CHARS, MAX_QUESTION_CHARS};
use slc_reasoner::error::ReasonerError;
use slc_reasoner::upstream::UpstreamError;
use slc_reasoner::validation::MAX_CONCEPTS;
use tower::ServiceExt;

use crate::helpers::*;

const KEY: &str = "edge-key";

/// A 1×1 PNG: the cue-text row needs an image, since cues describe one.
const PNG_DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYGAAAAAEAAH2FzhVAAAAAElFTkSuQmCC";

fn concepts(count: usize) -> Value {
    (0..count)
        .map(|index| json!({"id": format!("<c{index}>"), "description": format!("<c{index}> is a dog.")}))
        .collect()
}

async fn body_json(response: axum::response::Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).expect("a JSON error body")
}

/// Every error variant with its status and type.
fn error_variants() -> Vec<(ReasonerError, u16, &'static str)> {
    let upstream = |error| ReasonerError::Upstream(error);
    let message = || "scripted".to_owned();
    vec![
        (
            ReasonerError::invalid("empty_question", "x"),
            422,
            "empty_question",
        ),
        (
            ReasonerError::too_large("too_many_concepts", "x"),
            413,
            "too_many_concepts",
        ),
        (
            ReasonerError::BadBody {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid_json",
                message: message(),
            },
            400,
            "invalid_json",
        ),
        (ReasonerError::Unauthorized, 401, "unauthorized"),
        (
            ReasonerError::TooManyTurns { limit: 1 },
            429,
            "too_many_turns",
        ),
        (ReasonerError::NotFound("/x".into()), 404, "not_found"),
        (ReasonerError::MethodNotAllowed, 405, "method_not_allowed"),
        (
            upstream(UpstreamError::Rejected {
                status: 400,
                message: message(),
            }),
            502,
            "upstream_rejected",
        ),
        (
            upstream(UpstreamError::Unavailable {
                status: 503,
                attempts: 3,
                message: message(),
            }),
            502,
            "upstream_unavailable",
        ),
        (
            upstream(UpstreamError::Timeout {
                timeout_ms: 1,
                attempts: 3,
            }),
            504,
            "upstream_timeout",
        ),
        (
            upstream(UpstreamError::DeadlineExceeded { deadline_ms: 1 }),
            504,
            "upstream_deadline_exceeded",
        ),
        (
            upstream(UpstreamError::Unreachable {
                attempts: 3,
                message: message(),
            }),
            502,
            "upstream_unreachable",
        ),
        (
            upstream(UpstreamError::BadResponse { message: message() }),
            502,
            "upstream_bad_response",
        ),
        (
            ReasonerError::Cache(sqlx::Error::PoolClosed),
            503,
            "cache_unavailable",
        ),
        (
            ReasonerError::Cache(sqlx::Error::Protocol("scripted sqlx text".into())),
            503,
            "cache_unavailable",
        ),
    ]
}

/// A request: name, method, path, content type, body, whether it has the key.
type PolicyRequest = (
    &'static str,
    Method,
    &'static str,
    Option<&'static str>,
    String,
    bool,
);

/// Every kind of bad request with its status and type.
fn policy_requests() -> Vec<(PolicyRequest, u16, &'static str)> {
    let question = |concepts: Value| json!({"question": "What?", "concepts": concepts}).to_string();
    let json_type = Some("application/json");
    #[rustfmt::skip]
    let requests: Vec<(PolicyRequest, u16, &str)> = vec![
        (("malformed JSON", Method::POST, "/v1/reason", json_type, "{\"question\": ".into(), true), 400, "invalid_json"),
        (("not JSON", Method::POST, "/v1/reason", Some("text/plain"), question(concepts(1)), true), 415, "unsupported_media_type"),
        (("wrong shape", Method::POST, "/v1/reason", json_type, json!({"question": 5}).to_string(), true), 422, "invalid_request"),
        (("invalid", Method::POST, "/v1/reason", json_type, json!({"question": " ", "concepts": concepts(1)}).to_string(), true), 422, "empty_question"),
        (("bad concept id", Method::POST, "/v1/identities", json_type, json!({"concepts": [{"id": "<b o>", "description": "d"}]}).to_string(), true), 422, "invalid_concept_id"),
        (("too many concepts", Method::POST, "/v1/reason", json_type, question(concepts(MAX_CONCEPTS + 1)), true), 413, "too_many_concepts"),
        (("question too long", Method::POST, "/v1/reason", json_type, json!({"question": "x".repeat(2 * MAX_QUESTION_CHARS + 1), "concepts": concepts(1)}).to_string(), true), 413, "question_too_long"),
        (("description too long", Method::POST, "/v1/identities", json_type, json!({"concepts": [{"id": "<bo>", "description": "d".repeat(2 * MAX_DESCRIPTION_CHARS + 1)}]}).to_string(), true), 413, "description_too_long"),
        (("cue text too long", Method::POST, "/v1/reason", json_type, json!({"question": "Where?", "concepts": concepts(1), "image": PNG_DATA_URL, "cues": {"<c0>": {"present": true, "location-absolute": "l".repeat(MAX_CUE_TEXT_CHARS + 1)}}}).to_string(), true), 413, "cue_text_too_long"),
        (("answer tokens out of range", Method::POST, "/v1/reason", json_type, json!({"question": "What?", "concepts": concepts(1), "options": {"max_answer_tokens": 0}}).to_string(), true), 422, "invalid_request"),
        (("too many concepts to identify", Method::POST, "/v1/identities", json_type, json!({"concepts": concepts(MAX_CONCEPTS + 1)}).to_string(), true), 413, "too_many_concepts"),
        (("oversize body", Method::POST, "/v1/reason", json_type, question(json!([{"id": "<bo>", "description": "x".repeat(128 * 1024)}])), true), 413, "payload_too_large"),
        (("no key", Method::POST, "/v1/reason", json_type, question(concepts(1)), false), 401, "unauthorized"),
        (("wrong method", Method::GET, "/v1/reason", None, String::new(), true), 405, "method_not_allowed"),
        (("unknown route", Method::GET, "/v1/nowhere", None, String::new(), true), 404, "not_found"),
    ];
    requests
}

#[tokio::test]
async fn every_error_variant_and_request_gets_the_policy_status() {
    for (error, status, kind) in error_variants() {
        let name = format!("{error:?}");
        let response = error.into_response();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let body = body_json(response).await;
        assert_eq!(error_type(&body), kind, "{name}");
        // The large model's messages and the database's errors stay in the log.
        if status >= 500 {
            assert!(
                !body.to_string().contains("scripted"),
                "internal text reached the body of {name}: {body}"
            );
        }
    }

    let (router, _directory) = router_with(|config| {
        config.api_keys = vec![KEY.into()];
        config.max_body_bytes = 64 * 1024;
    })
    .await;
    for ((name, method, path, content_type, body, authorized), status, kind) in policy_requests() {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if authorized {
            request = request.header("authorization", format!("Bearer {KEY}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        if status == 405 {
            assert_eq!(response.headers()["allow"], "POST", "{name}");
        }
        assert_eq!(error_type(&body_json(response).await), kind, "{name}");
    }
}

#[tokio::test]
async fn request_ids_are_honoured_and_generated() {
    let (router, _directory) = router_with(|_| {}).await;
    let healthz = |request_id: Option<&str>| {
        let mut request = Request::builder().uri("/healthz");
        if let Some(request_id) = request_id {
            request = request.header(shared_types::REQUEST_ID_HEADER, request_id);
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let response = healthz(Some("edge-turn-42")).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "edge-turn-42");
    let response = healthz(None).await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(generated.starts_with("slc-reasoner-"), "{generated}");
}

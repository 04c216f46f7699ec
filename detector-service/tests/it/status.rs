//! The status policy both services share (see `error.rs`), as one table: every error variant,
//! and a request that produces each kind of refusal, with its status and error type. Requests
//! go through `Router::oneshot`: routing, extractors and middleware need no socket.

use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shared_types::limits::{MAX_ANSWER_TOKENS, MAX_DESCRIPTION_CHARS, MAX_QUESTION_CHARS};
use shared_types::{ConceptId, DetectResponse};
use slc_detector::error::ApiError;
use slc_detector::reasoner_client::ReasonerError;
use slc_detector::registry::RegistryError;
use tower::ServiceExt;

use crate::doubles::BASE_MODEL;
use crate::helpers::{base64_of, router_with, solid_png};

const KEY: &str = "edge-key";

async fn body_json(response: axum::response::Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).expect("a JSON error body")
}

/// Every error variant with its status and type.
fn error_variants() -> Vec<(ApiError, u16, &'static str)> {
    let text = || "scripted".to_owned();
    let bo = ConceptId::parse("bo").unwrap();
    let detection = DetectResponse {
        cues: Default::default(),
        adapter: None,
        concept_adapters: None,
        usage: Default::default(),
        timings: Default::default(),
    };
    vec![
        (
            ApiError::Malformed {
                kind: "invalid_json",
                message: text(),
            },
            400,
            "invalid_json",
        ),
        (ApiError::InvalidRequest(text()), 422, "invalid_request"),
        (
            ConceptId::parse("b o").unwrap_err().into(),
            422,
            "invalid_concept_id",
        ),
        (ApiError::InvalidImage(text()), 422, "invalid_image"),
        (ApiError::ImageTooLarge(text()), 413, "image_too_large"),
        (
            ApiError::TooLong {
                kind: "question_too_long",
                message: text(),
            },
            413,
            "question_too_long",
        ),
        (
            ApiError::OverQuota {
                kind: "storage_quota_exceeded",
                message: text(),
            },
            413,
            "storage_quota_exceeded",
        ),
        (ApiError::PayloadTooLarge(text()), 413, "payload_too_large"),
        (
            ApiError::TooMany {
                what: "concepts",
                count: 5,
                max: 4,
            },
            413,
            "too_many_concepts",
        ),
        (
            ApiError::TooMany {
                what: "images",
                count: 5,
                max: 4,
            },
            413,
            "too_many_images",
        ),
        (
            ApiError::UnsupportedMediaType(text()),
            415,
            "unsupported_media_type",
        ),
        (
            ApiError::UnknownConcepts(vec![bo.clone()]),
            404,
            "unknown_concept",
        ),
        (ApiError::NotFound(text()), 404, "not_found"),
        (ApiError::UnknownModel(text()), 404, "model_not_found"),
        (ApiError::ConceptExists(bo), 409, "concept_exists"),
        (ApiError::Unauthorized, 401, "unauthorized"),
        (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
        (
            ApiError::Overloaded {
                retry_after_secs: 2,
            },
            429,
            "overloaded",
        ),
        (ApiError::DeadlineExceeded, 504, "deadline_exceeded"),
        (ApiError::ModelUnavailable(text()), 503, "model_unavailable"),
        (ApiError::ModelFailed(text()), 500, "model_error"),
        (
            ApiError::InvalidModelOutput(text()),
            500,
            "invalid_model_output",
        ),
        (
            ApiError::upstream(
                ReasonerError::Timeout(std::time::Duration::from_secs(1)),
                Some(detection),
            ),
            504,
            "upstream_timeout",
        ),
        (
            ApiError::upstream(
                ReasonerError::Unreachable {
                    url: text(),
                    reason: text(),
                },
                None,
            ),
            502,
            "upstream_unreachable",
        ),
        (
            ApiError::upstream(
                ReasonerError::Upstream {
                    status: 500,
                    kind: Some("upstream_unavailable".into()),
                    message: text(),
                },
                None,
            ),
            502,
            "upstream_error",
        ),
        (
            ApiError::upstream(ReasonerError::InvalidResponse(text()), None),
            502,
            "upstream_invalid_response",
        ),
        (ApiError::Database(text()), 500, "database_error"),
        (
            ApiError::DatabaseUnavailable(text()),
            503,
            "database_unavailable",
        ),
        (
            ApiError::from(RegistryError::Database(sqlx::Error::PoolTimedOut)),
            503,
            "database_unavailable",
        ),
        (
            ApiError::from(RegistryError::Database(sqlx::Error::Protocol(text()))),
            500,
            "database_error",
        ),
        (
            ApiError::from(RegistryError::Corrupt(text())),
            500,
            "database_error",
        ),
        (ApiError::Internal(text()), 500, "internal_error"),
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

/// Every kind of refused request with its status and type.
fn policy_requests() -> Vec<(PolicyRequest, u16, &'static str)> {
    let image = base64_of(&solid_png([1, 2, 3], 4, 4));
    let register = |images: Vec<String>| {
        json!({"id": "bo", "description": "<bo>", "images": images}).to_string()
    };
    let detect = |concepts: Value| json!({"image": image, "concepts": concepts}).to_string();
    let chat = |model: &str, images: usize| {
        let parts: Vec<Value> = (0..images)
            .map(|_| json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}))
            .collect();
        json!({"model": model, "messages": [{"role": "user", "content": parts}]}).to_string()
    };
    let json_type = Some("application/json");
    let multipart = Some("multipart/form-data; boundary=xyz");
    #[rustfmt::skip]
    let requests: Vec<(PolicyRequest, u16, &str)> = vec![
        (("malformed JSON", Method::POST, "/v1/detect", json_type, "{\"image\": ".into(), true), 400, "invalid_json"),
        (("malformed multipart", Method::POST, "/v1/concepts", multipart, "not a multipart body".into(), true), 400, "invalid_multipart"),
        (("path of the wrong type", Method::GET, "/v1/concepts/bo/images/first", None, String::new(), true), 400, "invalid_path"),
        (("not JSON", Method::POST, "/v1/ask", Some("text/plain"), "hi".into(), true), 415, "unsupported_media_type"),
        (("wrong shape", Method::POST, "/v1/detect", json_type, json!({"image": 5}).to_string(), true), 422, "invalid_request"),
        (("empty question", Method::POST, "/v1/ask", json_type, json!({"question": " ", "concepts": []}).to_string(), true), 422, "invalid_request"),
        (("bad concept id", Method::POST, "/v1/detect", json_type, detect(json!(["b o"])), true), 422, "invalid_concept_id"),
        (("bad id in the path", Method::GET, "/v1/concepts/b%20o", None, String::new(), true), 422, "invalid_concept_id"),
        (("undecodable image", Method::POST, "/v1/concepts", json_type, register(vec!["AAAA".into()]), true), 422, "invalid_image"),
        (("adapter mix larger than the bank", Method::POST, "/v1/chat/completions", json_type, chat(&["x"; 1000].join("+"), 0), true), 422, "invalid_request"),
        (("unknown concept", Method::POST, "/v1/detect", json_type, detect(json!(["bo"])), true), 404, "unknown_concept"),
        (("unknown model", Method::POST, "/v1/chat/completions", json_type, chat("gpt-4o", 0), true), 404, "model_not_found"),
        (("too many concepts", Method::POST, "/v1/detect", json_type, detect(json!(["a", "b", "c", "d", "e"])), true), 413, "too_many_concepts"),
        (("too many reference images", Method::POST, "/v1/concepts", json_type, register(vec![image.clone(); 4]), true), 413, "too_many_images"),
        // The count is checked before any image is decoded: these would not decode.
        (("question too long", Method::POST, "/v1/ask", json_type, json!({"question": "x".repeat(MAX_QUESTION_CHARS + 1), "concepts": []}).to_string(), true), 413, "question_too_long"),
        (("description too long", Method::POST, "/v1/concepts", json_type, json!({"id": "bo", "description": "d".repeat(MAX_DESCRIPTION_CHARS + 1), "images": [image]}).to_string(), true), 413, "description_too_long"),
        (("answer tokens out of range", Method::POST, "/v1/ask", json_type, json!({"question": "Q?", "concepts": [], "max_answer_tokens": MAX_ANSWER_TOKENS + 1}).to_string(), true), 422, "invalid_request"),
        (("stop string too long", Method::POST, "/v1/chat/completions", json_type, json!({"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "stop": "s".repeat(65)}).to_string(), true), 422, "invalid_request"),
        (("too many chat images", Method::POST, "/v1/chat/completions", json_type, chat(BASE_MODEL, 4), true), 413, "too_many_images"),
        (("oversize body", Method::POST, "/v1/detect", json_type, detect(json!(["x".repeat(70 * 1024)])), true), 413, "payload_too_large"),
        (("no key", Method::POST, "/v1/detect", json_type, detect(json!(["bo"])), false), 401, "unauthorized"),
        (("wrong method", Method::GET, "/v1/detect", None, String::new(), true), 405, "method_not_allowed"),
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
        if status == 429 {
            assert_eq!(response.headers()["retry-after"], "2", "{name}");
        }
        if status == 503 && kind == "database_unavailable" {
            assert_eq!(response.headers()["retry-after"], "1", "{name}");
        }
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], kind, "{name}");
        // The reasoner's URL and messages and the database's errors stay in the log.
        if status >= 500 {
            assert!(
                !body.to_string().contains("scripted"),
                "internal text reached the body of {name}: {body}"
            );
        }
        if kind == "upstream_timeout" {
            assert!(
                body["detection"].is_object(),
                "the local detection is kept: {body}"
            );
        }
    }

    let (router, _state, _directory) = router_with(|config| {
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
        match status {
            405 => assert_eq!(response.headers()["allow"], "POST", "{name}"),
            401 => assert_eq!(response.headers()["www-authenticate"], "Bearer", "{name}"),
            _ => {}
        }
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], kind, "{name}: {body}");
    }
}

#[tokio::test]
async fn request_ids_are_honoured_and_generated() {
    let (router, _state, _directory) = router_with(|_| {}).await;
    let healthz = |request_id: Option<&str>| {
        let mut request = Request::builder().uri("/healthz");
        if let Some(request_id) = request_id {
            request = request.header(shared_types::REQUEST_ID_HEADER, request_id);
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let response = healthz(Some("app-turn-42")).await.unwrap();
    assert_eq!(
        response.headers()[shared_types::REQUEST_ID_HEADER],
        "app-turn-42"
    );
    let response = healthz(None).await.unwrap();
    let generated = response.headers()[shared_types::REQUEST_ID_HEADER]
        .to_str()
        .unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
}

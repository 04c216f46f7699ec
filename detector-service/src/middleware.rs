//! Cross-cutting layers: bearer authentication and per-route request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Routes reachable without a client key: probes, metrics (which have keys of their own), the
/// API description and the console's static files (which carry no data; the console asks for
/// a key and sends it itself).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path.starts_with("/docs")
        || path == "/ui"
        || path.starts_with("/ui/")
}

fn presented_key(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Checks `Authorization: Bearer KEY` against every configured key in constant time (no early
/// exit on the first match either, so timing says nothing about which key matched).
pub fn key_is_accepted(presented: &[u8], keys: &[String]) -> bool {
    let mut accepted = subtle::Choice::from(0u8);
    for key in keys {
        accepted |= key.as_bytes().ct_eq(presented);
    }
    bool::from(accepted)
}

pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/metrics" && !state.metrics_keys.is_empty() {
        return match presented_key(&request) {
            Some(key) if key_is_accepted(key.as_bytes(), &state.metrics_keys) => {
                next.run(request).await
            }
            _ => ApiError::Unauthorized.into_response(),
        };
    }
    if state.api_keys.is_empty() || is_public(request.uri().path()) {
        return next.run(request).await;
    }
    match presented_key(&request) {
        Some(key) if key_is_accepted(key.as_bytes(), &state.api_keys) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

pub async fn record_request_metrics(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .http_request_duration
        .with_label_values(&[route.as_str(), status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

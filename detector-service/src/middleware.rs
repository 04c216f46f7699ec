//! Cross-cutting layers: bearer authentication (key → tenant or operator, the per-tenant
//! request budget) and per-route request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tenants::{Principal, TenantId};

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

/// Authenticates the request and puts its [`Principal`] in the extensions: the tenant its key
/// belongs to, the operator, or in keyless mode the one local tenant. A tenant key's request
/// also takes one from its tenant's per-minute budget (429 with `Retry-After` when spent).
pub async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/metrics" {
        let guarded = !state.metrics_keys.is_empty() || state.keys.has_operator_keys();
        let allowed = !guarded
            || presented_key(&request).is_some_and(|key| {
                let scrape = key_is_accepted(key.as_bytes(), &state.metrics_keys);
                let operator = state.keys.authenticate(key.as_bytes()) == Some(Principal::Operator);
                scrape | operator
            });
        return if allowed {
            next.run(request).await
        } else {
            ApiError::Unauthorized.into_response()
        };
    }
    if is_public(path) {
        return next.run(request).await;
    }
    let principal = if state.keys.is_keyless() {
        Principal::Tenant {
            tenant: TenantId::local(),
            keyed: false,
        }
    } else {
        match presented_key(&request).and_then(|key| state.keys.authenticate(key.as_bytes())) {
            Some(principal) => principal,
            None => return ApiError::Unauthorized.into_response(),
        }
    };
    let tenant = match &principal {
        Principal::Tenant { tenant, keyed } => {
            if *keyed && let Err(retry_after_secs) = state.tenants.rate.check(tenant) {
                return ApiError::RateLimited { retry_after_secs }.into_response();
            }
            Some(tenant.clone())
        }
        Principal::Operator => None,
    };
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if let (Some(counter), Some(tenant)) = (&state.metrics.tenant_requests, tenant) {
        let status = response.status().as_u16().to_string();
        counter
            .with_label_values(&[tenant.as_str(), status.as_str()])
            .inc();
    }
    response
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

//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    #[schema(example = "ok")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = HealthStatus)))]
pub async fn healthz() -> axum::Json<HealthStatus> {
    axum::Json(HealthStatus {
        status: "ok".into(),
        reason: None,
    })
}

/// Readiness: the models and adapters are loaded and warmed, and the registry answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = HealthStatus), (status = 503, body = HealthStatus)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = sqlx::query("SELECT 1").execute(state.registry.pool()).await;
    let verdict = match (state.workers.readiness(), database) {
        (Ok(()), Ok(_)) => Ok(()),
        (Err(why), _) => Err(why),
        (_, Err(error)) => {
            // The database's own error is for the log; the probe's body says what, not why.
            tracing::warn!(%error, "the registry database does not answer");
            Err("the registry database does not answer".to_string())
        }
    };
    match verdict {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(HealthStatus {
                status: "ready".into(),
                reason: None,
            }),
        )
            .into_response(),
        Err(reason) => {
            // Probes ask every few seconds while the models load: not an error line each time.
            tracing::debug!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(HealthStatus {
                    status: "not_ready".into(),
                    reason: Some(reason),
                }),
            )
                .into_response()
        }
    }
}

/// What the edge runs and how busy it is, for the console and operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeStatus {
    pub ready: bool,
    /// Why the edge is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The served base model (a `model` of `/v1/chat/completions`); empty while loading.
    pub base_model: String,
    /// The adapter bank's adapters.
    pub adapters: Vec<String>,
    /// The CLIP model that embeds concepts.
    pub clip_model: String,
    pub workers: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub vision_cache_hits: u64,
    pub vision_cache_misses: u64,
    /// Prompt tokens whose keys and values a prefix-cache hit supplied.
    pub prefix_reused_tokens: u64,
    /// Prompt tokens prefilled.
    pub prefill_tokens: u64,
}

/// The edge's models, queue and cache counters (the numbers `/metrics` has, as JSON).
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, body = EdgeStatus), (status = 401, body = shared_types::ErrorBody)))]
pub async fn status(State(state): State<AppState>) -> axum::Json<EdgeStatus> {
    let catalog = state.workers.catalog();
    let (workers, queue_capacity) = state.workers.capacity();
    let readiness = state.workers.readiness();
    let metrics = &state.metrics;
    axum::Json(EdgeStatus {
        ready: readiness.is_ok(),
        reason: readiness.err(),
        base_model: catalog.base_model,
        adapters: catalog.adapters,
        clip_model: catalog.clip_model,
        workers,
        queue_depth: state.workers.queue_depth(),
        queue_capacity,
        vision_cache_hits: metrics.vision_cache_hits.get(),
        vision_cache_misses: metrics.vision_cache_misses.get(),
        prefix_reused_tokens: metrics.prefix_reused_tokens.get(),
        prefill_tokens: metrics.prefill_tokens.get(),
    })
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .queue_depth
        .set(state.workers.queue_depth() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

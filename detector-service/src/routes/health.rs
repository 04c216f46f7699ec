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

//! The HTTP layer: routes, the bearer-key check, the concurrency limit and per-request tracing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared_types::{
    CACHE_PARTITION_HEADER, IdentitiesRequest, IdentitiesResponse, REQUEST_ID_HEADER,
    ReasonRequest, ReasonResponse,
};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa_swagger_ui::SwaggerUi;

use crate::cache::{Caller, IdentityCacheScope, MAX_PARTITION_LEN};
use crate::error::{ApiJson, ReasonerError};
use crate::metrics::Metrics;
use crate::turn::Reasoner;
use crate::validation::MAX_CONCEPTS;

/// Everything the handlers share. Cloning is cheap; nothing in here is locked per request.
#[derive(Clone)]
pub struct AppState {
    pub reasoner: Arc<Reasoner>,
    pub metrics: Metrics,
    /// SHA-256 digests of the accepted bearer keys; empty means no authentication.
    pub api_key_digests: Arc<Vec<[u8; 32]>>,
    /// Digests of the keys that may read `/metrics`; empty leaves it open.
    pub metrics_key_digests: Arc<Vec<[u8; 32]>>,
    pub turns: Arc<Semaphore>,
    pub max_concurrent_turns: usize,
    pub max_body_bytes: usize,
    pub body_limits: slc_serve::BodyLimits,
    pub server_limits: slc_serve::ServerLimits,
}

/// The service's router: the turn endpoints behind auth and the concurrency limit, the
/// operational endpoints open.
pub fn app(state: AppState) -> Router {
    let turn_routes = Router::new()
        .route("/v1/reason", post(reason))
        .route("/v1/identities", post(identities))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit_turn))
        // The whole body is read before a turn permit is taken: a client trickling its body
        // holds a connection, not one of the turns.
        .route_layer(middleware::from_fn_with_state(
            state.body_limits,
            slc_serve::read_body,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    let swagger: Router<AppState> = SwaggerUi::new("/docs")
        .url("/openapi.json", crate::openapi::spec())
        .into();
    Router::new()
        .merge(turn_routes)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(metrics).route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_metrics_key,
            )),
        )
        .merge(swagger)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(PropagateRequestIdLayer::new(
            header::HeaderName::from_static(REQUEST_ID_HEADER),
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(
            header::HeaderName::from_static(REQUEST_ID_HEADER),
            CounterRequestId::default(),
        ))
        .with_state(state)
}

/// Request ids for requests that came without one: the process start time and a counter,
/// unique per process and sortable.
#[derive(Clone, Default)]
struct CounterRequestId {
    next: Arc<AtomicU64>,
}

impl MakeRequestId for CounterRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let value = format!("slc-reasoner-{}-{number}", std::process::id());
        HeaderValue::from_str(&value).ok().map(RequestId::new)
    }
}

/// The error responses of both turn endpoints, as the status policy in `error.rs` gives them;
/// every body is `ErrorBody`.
struct TurnErrors;

impl utoipa::IntoResponses for TurnErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let body = || Content::new(Some(Ref::from_schema_name("ErrorBody")));
        let too_large = format!(
            "Body over the size limit, more than {MAX_CONCEPTS} concepts, or a question, \
             description or cue text over its cap in `shared_types::limits`"
        );
        [
            (400, "Malformed JSON"),
            (401, "Missing or wrong bearer key"),
            (405, "Wrong method; `Allow` names POST"),
            (413, too_large.as_str()),
            (415, "Not application/json"),
            (
                422,
                "Well-formed JSON of the wrong shape, or an invalid request",
            ),
            (429, "Over the concurrency limit; see `Retry-After`"),
            (502, "The large model failed"),
            (503, "The identity cache's database does not answer"),
            (504, "The large model was too slow"),
        ]
        .into_iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body())
                .build();
            (status.to_string(), response.into())
        })
        .collect()
    }
}

#[utoipa::path(
    post,
    path = "/v1/reason",
    tag = "reasoner",
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "The answer with its trace; with `stream: true`, server-sent events `verification` (a VerificationEvent), `delta` (an AnswerDelta, the answer's next text), then `done` (a ReasonResponse) or `error` (a StreamError)", body = ReasonResponse),
        TurnErrors,
    ),
    security(("bearer" = []))
)]
pub async fn reason(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    caller: Option<Extension<Caller>>,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<Response, ReasonerError> {
    let request_id = request_id.as_ref().map(|id| id.header_value());
    let caller = caller.map_or(Caller::ANONYMOUS, |Extension(caller)| caller);
    let stream = request.stream;
    // Validated before any event: a bad request is a plain 4xx, streamed or not.
    let request = crate::validation::validate_reason(request)?;
    if stream {
        return Ok(crate::streaming::streamed_turn(
            state.reasoner.clone(),
            request,
            caller,
            request_id.cloned(),
            caller_deadline(&headers),
        ));
    }
    within_caller_deadline(
        &headers,
        state.reasoner.run(&request, caller, request_id, None),
    )
    .await
    .map(|response| Json(response).into_response())
}

/// The caller's `x-slc-deadline-ms`, when it sent one that parses.
fn caller_deadline(headers: &axum::http::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(shared_types::DEADLINE_MS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

/// Runs `turn` within the caller's `x-slc-deadline-ms`, when it sent one: past it the turn is
/// dropped, which cancels its upstream calls, and the caller gets 504.
async fn within_caller_deadline<T>(
    headers: &axum::http::HeaderMap,
    turn: impl std::future::Future<Output = Result<T, ReasonerError>>,
) -> Result<T, ReasonerError> {
    let Some(deadline) = caller_deadline(headers) else {
        return turn.await;
    };
    tokio::time::timeout(deadline, turn)
        .await
        .unwrap_or(Err(ReasonerError::Upstream(
            crate::upstream::UpstreamError::DeadlineExceeded {
                deadline_ms: deadline.as_millis() as u64,
            },
        )))
}

#[utoipa::path(
    post,
    path = "/v1/identities",
    tag = "reasoner",
    request_body = IdentitiesRequest,
    responses(
        (status = 200, description = "Each concept's identity (Table 7)", body = IdentitiesResponse),
        TurnErrors,
    ),
    security(("bearer" = []))
)]
pub async fn identities(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    caller: Option<Extension<Caller>>,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<IdentitiesRequest>,
) -> Result<Json<IdentitiesResponse>, ReasonerError> {
    let request_id = request_id.as_ref().map(|id| id.header_value());
    let caller = caller.map_or(Caller::ANONYMOUS, |Extension(caller)| caller);
    within_caller_deadline(
        &headers,
        state.reasoner.identities(request, caller, request_id),
    )
    .await
    .map(Json)
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the identity cache's database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "The database does not answer", body = shared_types::ErrorBody),
    )
)]
pub async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ReasonerError> {
    state.reasoner.cache.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn not_found(request: Request) -> ReasonerError {
    ReasonerError::NotFound(request.uri().path().to_owned())
}

async fn method_not_allowed() -> ReasonerError {
    ReasonerError::MethodNotAllowed
}

/// Bearer keys are compared as SHA-256 digests in constant time, against every configured key,
/// so neither the length nor the matching key leaks through timing. The accepted key's digest
/// goes on as the request's [`Caller`], the identity cache's partition.
async fn require_bearer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ReasonerError> {
    let mut caller =
        check_bearer(&request, &state.api_key_digests)?.map_or(Caller::ANONYMOUS, Caller);
    if state.reasoner.cache_scope == IdentityCacheScope::Tenant
        && let Some(partition) = request.headers().get(CACHE_PARTITION_HEADER)
    {
        let partition = partition
            .to_str()
            .ok()
            .filter(|value| (1..=MAX_PARTITION_LEN).contains(&value.len()))
            .ok_or_else(|| {
                ReasonerError::Invalid {
                    kind: "invalid_cache_partition",
                    message: format!(
                        "{CACHE_PARTITION_HEADER} must be 1 to {MAX_PARTITION_LEN} visible ASCII characters"
                    ),
                }
            })?;
        caller = caller.within_partition(partition);
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// `/metrics` behind its own keys when `SLC_REASONER_METRICS_KEYS` is set.
async fn require_metrics_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ReasonerError> {
    check_bearer(&request, &state.metrics_key_digests)?;
    Ok(next.run(request).await)
}

/// `Ok(None)` when `digests` is empty (no keys configured); `Ok(Some(digest))` of the bearer
/// token when it matches one.
fn check_bearer(
    request: &Request,
    digests: &[[u8; 32]],
) -> Result<Option<[u8; 32]>, ReasonerError> {
    if digests.is_empty() {
        return Ok(None);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| Sha256::digest(token.trim().as_bytes()));
    let Some(presented) = presented else {
        return Err(ReasonerError::Unauthorized);
    };
    let mut matched = subtle::Choice::from(0u8);
    for digest in digests {
        matched |= digest.as_slice().ct_eq(presented.as_slice());
    }
    if bool::from(matched) {
        Ok(Some(presented.into()))
    } else {
        Err(ReasonerError::Unauthorized)
    }
}

/// Admits a turn if a slot is free, else 429 at once (no queueing: the edge retries), and
/// records the turn's status and duration.
async fn admit_turn(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ReasonerError> {
    let endpoint = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |path| path.as_str().to_owned(),
    );
    let Ok(permit) = state.turns.clone().try_acquire_owned() else {
        state.metrics.turns_rejected.inc();
        state
            .metrics
            .turns
            .with_label_values(&[endpoint.as_str(), "429"])
            .inc();
        return Err(ReasonerError::TooManyTurns {
            limit: state.max_concurrent_turns,
        });
    };
    let started = Instant::now();
    let in_flight = InFlight::enter(&state.metrics);
    let response = next.run(request).await;
    // A streamed turn is still running when its head goes out: its slot and the in-flight
    // gauge stay taken until the body ends or the client leaves.
    let response = if is_event_stream(&response) {
        hold_until_body_ends(response, (in_flight, permit))
    } else {
        drop(in_flight);
        drop(permit);
        response
    };
    state
        .metrics
        .turns
        .with_label_values(&[endpoint.as_str(), response.status().as_str()])
        .inc();
    state
        .metrics
        .turn_latency
        .with_label_values(&[endpoint.as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// The same response whose body owns `guard` until it is dropped.
fn hold_until_body_ends<G: Send + Sync + 'static>(response: Response, guard: G) -> Response {
    use futures::StreamExt;
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

/// Keeps the in-flight gauge right even when a client hangs up and the turn is dropped.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(metrics: &Metrics) -> Self {
        metrics.turns_in_flight.inc();
        Self(metrics.turns_in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

//! The SLC edge service (`slc-detector serve`): the concept registry, test-time detection with
//! the small VLM, an OpenAI-compatible endpoint and the app's `/v1/ask` entry point.
//!
//! Shape: [`app`] builds the router from an [`AppState`]; [`run`] serves it on a listener until
//! a shutdown future resolves; `main.rs` only parses the config and wires the engine.

pub mod config;
pub mod console;
pub mod detection;
pub mod embedding;
pub mod engine_models;
pub mod error;
pub mod extract;
pub mod grounding;
pub mod images;
pub mod metrics;
pub mod middleware;
pub mod model;
pub mod openai_types;
pub mod openapi;
pub mod pseudonyms;
pub mod reasoner_client;
pub mod registry;
pub mod routes;
pub mod scenario_adapters;
pub mod state;
pub mod tenants;
pub mod workers;

#[cfg(test)]
mod proptests;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::HeaderName;
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::images::{ImageIntake, ImageLimits};
use crate::metrics::Metrics;
use crate::model::{AdapterChooser, ModelLoader};
use crate::reasoner_client::ReasonerClient;
use crate::registry::{Registry, RegistryError, RegistryOptions};
pub use crate::state::{AppInner, AppState, Limits, TenantPolicy};
use crate::tenants::TenantQuotas;
use crate::tenants::rate::RateLimiter;
use crate::workers::WorkerPool;

pub mod cli;

/// Whether libtorch can see a CUDA device from this binary.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

const REQUEST_ID: HeaderName = HeaderName::from_static(shared_types::REQUEST_ID_HEADER);

/// The router with every route and layer.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/v1/concepts",
            post(routes::concepts::create_concept).get(routes::concepts::list_concepts),
        )
        .route(
            "/v1/concepts/{id}",
            get(routes::concepts::get_concept)
                .put(routes::concepts::update_concept)
                .delete(routes::concepts::delete_concept),
        )
        .route(
            "/v1/concepts/{id}/images/{n}",
            get(routes::concepts::get_concept_image),
        )
        .route(
            "/v1/scenarios",
            post(routes::scenarios::create_scenario).get(routes::scenarios::list_scenarios),
        )
        .route(
            "/v1/scenarios/{id}",
            get(routes::scenarios::get_scenario)
                .put(routes::scenarios::update_scenario)
                .delete(routes::scenarios::delete_scenario),
        )
        .route(
            "/v1/conversations",
            post(routes::conversations::create_conversation),
        )
        .route(
            "/v1/conversations/{id}",
            get(routes::conversations::get_conversation)
                .delete(routes::conversations::delete_conversation),
        )
        .route("/v1/detect", post(routes::detect::detect))
        .route("/v1/ask", post(routes::ask::ask))
        .route("/v1/chat/completions", post(routes::chat::chat_completions))
        .route("/v1/models", get(routes::chat::list_models))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/v1/status", get(routes::health::status))
        .route("/v1/export", get(routes::tenants::export))
        .route("/v1/tenants", get(routes::tenants::list_tenants))
        .route(
            "/v1/tenants/{tenant}",
            get(routes::tenants::get_tenant).delete(routes::tenants::delete_tenant),
        )
        .route(
            "/v1/tenants/{tenant}/export",
            get(routes::tenants::export_tenant),
        )
        .merge(console::routes())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Innermost: a request reaches a handler (and so the model queue) only once its
        // whole body has arrived, within the read deadline.
        .layer(axum::middleware::from_fn_with_state(
            state.limits.body,
            slc_serve::read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::record_request_metrics,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_api_key,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
    api.layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        uri = %request.uri(),
                        request_id = %request_id,
                    )
                })
                // `ApiError` logs every failure it answers with its reason, at error for a 5xx;
                // the layer's own ERROR line per 5xx would also fire on every `/readyz` probe
                // while the models load.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Serves the app on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (graceful shutdown), with the connection cap and read deadlines of `slc_serve`.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits.server;
    slc_serve::serve(listener, app(state), limits, shutdown).await
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("opening the concept registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("loading the keys: {0}")]
    Keys(String),
}

/// Everything that is not the models themselves, built from the config.
pub async fn build_state(
    config: &ServeConfig,
    loader: Arc<dyn ModelLoader>,
    adapter_chooser: Arc<dyn AdapterChooser>,
    registry_options: RegistryOptions,
) -> Result<AppState, StartupError> {
    let keys = Arc::new(config.key_store().map_err(StartupError::Keys)?);
    keys.spawn_watcher();
    let registry = Registry::connect(&config.database_url, registry_options).await?;
    let metrics = Metrics::with_tenant_labels(config.metrics_tenant_labels);
    let worker_count = config.workers.unwrap_or_else(|| {
        engine_models::default_workers(&config.device, engine_models::cuda_device_count())
    });
    let workers = WorkerPool::start(loader, worker_count, config.queue_size, metrics.clone());
    let image_limits = ImageLimits {
        max_pixels: config.max_image_pixels,
    };
    Ok(AppState::new(AppInner {
        registry,
        images: ImageIntake::new(image_limits, config.decode_budget_mib * 1024 * 1024),
        workers,
        adapter_chooser,
        scenario_adapters: Default::default(),
        reasoner: ReasonerClient::new(
            &config.reasoner_url,
            config.reasoner_api_key.clone(),
            config.reasoner_timeout(),
        ),
        metrics,
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            server: config.serve_limits().0,
            body: config.serve_limits().1,
            max_concepts_per_request: config.max_concepts_per_request,
            max_images_per_concept: config.max_images_per_concept,
            max_concepts: config.max_concepts,
            max_stored_bytes: config.max_stored_mib * 1024 * 1024,
            max_chat_images: config.max_chat_images,
            request_deadline: config.request_deadline(),
            detect_max_tokens: config.detect_max_tokens,
            conversation_scope_turns: config.conversation_scope_turns,
        },
        keys,
        metrics_keys: config.scrape_keys(),
        concept_isolation: config.concept_isolation,
        tenants: TenantPolicy {
            quotas: TenantQuotas {
                max_concepts: config.tenant_max_concepts,
                max_conversations: config.tenant_max_conversations,
                max_stored_bytes: config.tenant_max_stored_mib * 1024 * 1024,
                requests_per_minute: config.tenant_requests_per_minute,
            },
            rate: RateLimiter::new(config.tenant_requests_per_minute),
            operator_reads_photos: config.operator_reads_photos,
        },
    }))
}

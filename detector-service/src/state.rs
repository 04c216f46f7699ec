//! The shared state every handler gets: registry, model workers, adapter choice, reasoner
//! client, metrics and limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::model::AdapterChooser;
use crate::reasoner_client::ReasonerClient;
use crate::registry::Registry;
use crate::workers::WorkerPool;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub body: slc_serve::BodyLimits,
    pub server: slc_serve::ServerLimits,
    pub max_concepts_per_request: usize,
    pub max_images_per_concept: usize,
    pub max_concepts: usize,
    pub max_stored_bytes: u64,
    pub max_chat_images: usize,
    pub request_deadline: Duration,
    pub detect_max_tokens: u32,
    /// Latest turns of a conversation whose concepts stay in scope.
    pub conversation_scope_turns: usize,
}

pub struct AppInner {
    pub registry: Registry,
    /// Client images in: header checks, the decode budget, decoding off the runtime.
    pub images: crate::images::ImageIntake,
    pub workers: Arc<WorkerPool>,
    pub adapter_chooser: Arc<dyn AdapterChooser>,
    /// Eq. 1's choice per scenario, until its members change.
    pub scenario_adapters: crate::scenario_adapters::ScenarioAdapters,
    pub reasoner: ReasonerClient,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Tenant and operator keys (hashed), reloaded from the keys file when it changes.
    pub keys: Arc<crate::tenants::keys::KeyStore>,
    /// Keys that may read `/metrics` besides the operator's; none of either leaves it open.
    pub metrics_keys: Vec<String>,
    /// Whether a turn's concepts are detected (and verified) together or each on its own.
    pub concept_isolation: crate::detection::ConceptIsolation,
    pub tenants: TenantPolicy,
}

/// What tenants may do, besides the registry-wide limits.
pub struct TenantPolicy {
    pub quotas: crate::tenants::TenantQuotas,
    pub rate: crate::tenants::rate::RateLimiter,
    /// `SLC_OPERATOR_READS_PHOTOS`: operator keys may export a tenant's data.
    pub operator_reads_photos: bool,
}

#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }

    /// When a request arriving now must be finished.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.limits.request_deadline
    }
}

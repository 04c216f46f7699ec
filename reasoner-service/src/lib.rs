//! The SLC cloud reasoner (`slc-reasoner`): identity extraction, test-time reflection and
//! answer generation through any OpenAI-compatible large VLM (paper section 3.2.2, appendices
//! B.2, B.3 and D). It never loads weights; it only speaks HTTP.
//!
//! Shape: [`build_state`] turns a [`ServeConfig`] into an [`AppState`], [`app`] makes the
//! router and [`run`] serves it until the shutdown future resolves.

pub mod audit;
pub mod cache;
pub mod config;
pub mod error;
pub mod history;
pub mod http;
pub mod identity;
pub mod image;
pub mod metrics;
pub mod openapi;
pub mod prompts;
pub mod reflection;
pub mod streaming;
pub mod turn;
pub mod upstream;
pub mod validation;

#[cfg(test)]
mod proptests;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::ServeConfig;
pub use http::{AppState, app};

use crate::audit::AuditLog;
use crate::cache::IdentityCache;
use crate::metrics::Metrics;
use crate::turn::Reasoner;
use crate::upstream::UpstreamClient;

/// Connects the database (running migrations), opens the audit log and builds the client.
pub async fn build_state(config: &ServeConfig) -> anyhow::Result<AppState> {
    let metrics = Metrics::new();
    let cache = IdentityCache::connect(&config.database_url, config.database_max_connections)
        .await
        .with_context(|| {
            format!(
                "could not open the identity cache at {}",
                redact(&config.database_url)
            )
        })?;
    let audit = match &config.audit_log {
        Some(path) => Some(Arc::new(AuditLog::open(path).with_context(|| {
            format!("could not open the audit log {}", path.display())
        })?)),
        None => None,
    };
    let upstream = UpstreamClient::new(config.upstream_settings(), metrics.clone(), audit)
        .context("could not build the large model's HTTP client")?;
    let api_key_digests = key_digests(&config.api_keys);
    Ok(AppState {
        reasoner: Arc::new(Reasoner {
            upstream,
            cache,
            cache_scope: config.identity_cache_scope,
            history_budget_chars: config.history_budget_chars,
            metrics: metrics.clone(),
            recent_fallbacks: crate::identity::RecentFallbacks::new(
                std::time::Duration::from_secs(config.identity_fallback_retry_secs),
            ),
        }),
        metrics,
        api_key_digests: Arc::new(api_key_digests),
        metrics_key_digests: Arc::new(key_digests(&config.metrics_keys)),
        turns: Arc::new(Semaphore::new(config.max_concurrent_turns)),
        max_concurrent_turns: config.max_concurrent_turns,
        max_body_bytes: config.max_body_bytes,
        server_limits: config.serve_limits().0,
        body_limits: config.serve_limits().1,
    })
}

/// Serves until `shutdown` resolves, then finishes the turns in flight (see `slc_serve`).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.server_limits;
    slc_serve::serve(listener, app(state), limits, shutdown).await
}

/// SHA-256 digests of the non-empty keys (compared in constant time by `http.rs`).
fn key_digests(keys: &[String]) -> Vec<[u8; 32]> {
    keys.iter()
        .map(|key| key.trim())
        .filter(|key| !key.is_empty())
        .map(|key| Sha256::digest(key.as_bytes()).into())
        .collect()
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://…@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

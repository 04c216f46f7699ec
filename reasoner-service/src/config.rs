//! `slc-reasoner serve`'s configuration: one flag per setting, each with an env var and a
//! default that works on a laptop (an SQLite file next to the process, no client keys).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::cache::IdentityCacheScope;
use crate::upstream::{RetryPolicy, UpstreamSettings};

#[derive(Debug, Clone, Parser)]
#[command(about = "Serve the SLC cloud reasoner")]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "SLC_REASONER_BIND", default_value = "127.0.0.1:8090")]
    pub bind: SocketAddr,

    /// OpenAI-compatible API base, up to and including `/v1`.
    #[arg(
        long,
        env = "SLC_LLM_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub llm_base_url: String,

    /// The large VLM's model name at that API.
    #[arg(long, env = "SLC_LLM_MODEL", default_value = "gpt-4o")]
    pub llm_model: String,

    /// Bearer key for the large model's API.
    #[arg(long, env = "SLC_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,

    /// Ask for `response_format: json_schema` on identity extraction (OpenAI, vLLM).
    #[arg(long, env = "SLC_LLM_JSON_SCHEMA", action = ArgAction::Set, default_value_t = false)]
    pub llm_json_schema: bool,

    /// Whose turns share cached identities: `tenant` (each bearer key's each tenant, named
    /// by the edge's opaque `x-slc-cache-partition`, its own cache), `caller` (each bearer
    /// key its own cache, so a caller never learns whether another sent a description; one
    /// shared partition when authentication is off) or `global` (one cache for all, fewer
    /// large-model calls).
    #[arg(
        long,
        env = "SLC_IDENTITY_CACHE_SCOPE",
        value_enum,
        default_value_t = IdentityCacheScope::Tenant
    )]
    pub identity_cache_scope: IdentityCacheScope,

    /// Seconds before asking again for an identity whose extraction fell back (the fallback is
    /// never stored in the database); 0 asks on every turn.
    #[arg(long, env = "SLC_IDENTITY_FALLBACK_RETRY_SECS", default_value_t = 600)]
    pub identity_fallback_retry_secs: u64,

    /// Ask verification questions under a `{"Q1": "yes"|"no", ...}` schema (default: the same
    /// as --llm-json-schema). Off, they are free text as in the paper's prompts.
    #[arg(long, env = "SLC_LLM_VERIFY_JSON_SCHEMA", action = ArgAction::Set)]
    pub llm_verify_json_schema: Option<bool>,

    /// Speak HTTP/1.1 only to the large model, one connection per call in flight. Over TLS
    /// reqwest otherwise negotiates HTTP/2 (api.openai.com does), and then every call shares
    /// one connection capped at the server's SETTINGS_MAX_CONCURRENT_STREAMS: calls beyond it
    /// wait (hyper opens no second connection, hyperium/hyper#2197).
    #[arg(long, env = "SLC_LLM_HTTP1_ONLY", action = ArgAction::Set, default_value_t = false)]
    pub llm_http1_only: bool,

    /// Limit of one HTTP attempt to the large model, in milliseconds.
    #[arg(long, env = "SLC_LLM_ATTEMPT_TIMEOUT_MS", default_value_t = 60_000)]
    pub llm_attempt_timeout_ms: u64,

    /// Limit of one logical call (retries and backoff included), in milliseconds.
    #[arg(long, env = "SLC_LLM_CALL_DEADLINE_MS", default_value_t = 180_000)]
    pub llm_call_deadline_ms: u64,

    /// Retries after the first attempt on 429, 5xx, timeouts and transport errors.
    #[arg(long, env = "SLC_LLM_MAX_RETRIES", default_value_t = 3)]
    pub llm_max_retries: usize,

    /// First backoff delay, in milliseconds (doubles per retry, with jitter).
    #[arg(long, env = "SLC_LLM_MIN_BACKOFF_MS", default_value_t = 500)]
    pub llm_min_backoff_ms: u64,

    /// Largest backoff delay, in milliseconds.
    #[arg(long, env = "SLC_LLM_MAX_BACKOFF_MS", default_value_t = 10_000)]
    pub llm_max_backoff_ms: u64,

    /// Longest `Retry-After` honoured, in milliseconds.
    #[arg(long, env = "SLC_LLM_MAX_RETRY_AFTER_MS", default_value_t = 30_000)]
    pub llm_max_retry_after_ms: u64,

    /// Identity cache: `sqlite://FILE?mode=rwc` or `postgres://…`.
    #[arg(
        long,
        env = "SLC_DATABASE_URL",
        default_value = "sqlite://slc-reasoner.db?mode=rwc"
    )]
    pub database_url: String,

    #[arg(long, env = "SLC_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// Bearer keys the edges present, comma-separated. None: no authentication (laptop use).
    #[arg(
        long,
        env = "SLC_REASONER_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Serve without `SLC_REASONER_API_KEYS` on an address other machines can reach (refused
    /// otherwise: anyone reaching the port would spend the large model's key).
    #[arg(long, env = "SLC_REASONER_ALLOW_UNAUTHENTICATED", action = ArgAction::Set, default_value_t = false)]
    pub allow_unauthenticated: bool,

    /// Bearer keys that may read `/metrics`, comma-separated (Prometheus's scrape key). None:
    /// `/metrics` is open, like the probes.
    #[arg(
        long,
        env = "SLC_REASONER_METRICS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub metrics_keys: Vec<String>,

    /// Characters of a conversation's earlier questions and answers the answer call gets;
    /// the oldest turns past it are left out (the trace's `history` says how many).
    #[arg(long, env = "SLC_REASONER_HISTORY_BUDGET_CHARS", default_value_t = shared_types::limits::DEFAULT_HISTORY_BUDGET_CHARS)]
    pub history_budget_chars: usize,

    /// Turns served at once; one more gets 429.
    #[arg(long, env = "SLC_REASONER_MAX_CONCURRENT_TURNS", default_value_t = 256)]
    pub max_concurrent_turns: usize,

    /// Largest request body (the image is in it), in bytes; the default is the edge's default
    /// plus room for what the edge adds (`shared_types::limits`).
    #[arg(long, env = "SLC_REASONER_MAX_BODY_BYTES", default_value_t = shared_types::limits::REASONER_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Open connections at most; more wait in the listen backlog.
    #[arg(long, env = "SLC_REASONER_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds a client may take to send a request head, and again its whole body; a slower
    /// one gets 408 (or its connection closed) before it holds a turn permit.
    #[arg(long, env = "SLC_REASONER_READ_TIMEOUT_SECS", default_value_t = 30.0)]
    pub read_timeout_secs: f64,

    /// Append one JSON line per upstream call (kind and sizes only) to this file.
    #[arg(long, env = "SLC_REASONER_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "SLC_LOG_JSON", action = ArgAction::Set, default_value_t = false)]
    pub log_json: bool,
}

impl ServeConfig {
    /// Refuses an open bind without keys unless `SLC_REASONER_ALLOW_UNAUTHENTICATED` says so.
    pub fn check_exposure(&self) -> Result<(), String> {
        let has_keys = self.api_keys.iter().any(|key| !key.trim().is_empty());
        slc_serve::refuse_open_bind(
            self.bind,
            has_keys,
            self.allow_unauthenticated,
            "SLC_REASONER_ALLOW_UNAUTHENTICATED",
        )
    }

    /// The connection cap and read deadlines of `slc_serve`.
    pub fn serve_limits(&self) -> (slc_serve::ServerLimits, slc_serve::BodyLimits) {
        slc_serve::limits(
            self.max_connections,
            self.max_body_bytes,
            self.read_timeout_secs,
        )
    }

    pub fn upstream_settings(&self) -> UpstreamSettings {
        UpstreamSettings {
            base_url: self.llm_base_url.clone(),
            model: self.llm_model.clone(),
            api_key: self.llm_api_key.clone().filter(|key| !key.is_empty()),
            json_schema: self.llm_json_schema,
            verify_json_schema: self.llm_verify_json_schema.unwrap_or(self.llm_json_schema),
            http1_only: self.llm_http1_only,
            retry: RetryPolicy {
                attempt_timeout: Duration::from_millis(self.llm_attempt_timeout_ms),
                call_deadline: Duration::from_millis(self.llm_call_deadline_ms),
                max_retries: self.llm_max_retries,
                min_backoff: Duration::from_millis(self.llm_min_backoff_ms),
                max_backoff: Duration::from_millis(self.llm_max_backoff_ms),
                max_retry_after: Duration::from_millis(self.llm_max_retry_after_ms),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_only_is_off_by_default_and_reaches_the_upstream_settings() {
        let config = ServeConfig::parse_from(["serve"]);
        assert!(!config.upstream_settings().http1_only);
        let config = ServeConfig::parse_from(["serve", "--llm-http1-only", "true"]);
        assert!(config.upstream_settings().http1_only);
    }

    #[test]
    fn the_identity_cache_is_per_caller_unless_told_global() {
        let config = ServeConfig::parse_from(["serve"]);
        assert_eq!(config.identity_cache_scope, IdentityCacheScope::Tenant);
        let config = ServeConfig::parse_from(["serve", "--identity-cache-scope", "caller"]);
        assert_eq!(config.identity_cache_scope, IdentityCacheScope::Caller);
        let config = ServeConfig::parse_from(["serve", "--identity-cache-scope", "global"]);
        assert_eq!(config.identity_cache_scope, IdentityCacheScope::Global);
        assert!(
            ServeConfig::try_parse_from(["serve", "--identity-cache-scope", "nobody"]).is_err()
        );
    }
}

//! Tenants: who owns which rows, which key acts for whom, and each tenant's request budget.
//!
//! A tenant is named by a [`TenantId`]. The auth middleware turns the presented key into a
//! [`Principal`] (a tenant, or the operator) and puts it in the request's extensions; the
//! [`Scope`] extractor hands handlers a registry already scoped to that tenant, so no handler
//! can name another tenant's rows. Keys come from `SLC_API_KEYS` (`tenant:key`), `SLC_ADMIN_KEYS`
//! and a keys file of salted hashes (`keys.rs`), reloaded without a restart.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::registry::ScopedRegistry;
use crate::state::AppState;

pub mod archive;
pub mod keys;
pub mod rate;

/// The tenant of keyless mode (`SLC_API_KEYS` empty on loopback), of keys configured without
/// a `tenant:` prefix, and of every row written before tenants existed.
pub const LOCAL_TENANT: &str = "local";

/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// A tenant's name: 1 to 64 of `a-z`, `0-9`, `_`, `-`, starting with a letter or digit. The
/// id never leaves the edge (the reasoner sees [`TenantId::cache_partition`] only).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<TenantId, String> {
        let valid = (1..=MAX_TENANT_ID_LEN).contains(&raw.len())
            && raw.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
            })
            && raw.as_bytes()[0].is_ascii_alphanumeric();
        if valid {
            Ok(TenantId(raw.to_string()))
        } else {
            Err(format!(
                "invalid tenant id {raw:?}: use 1 to {MAX_TENANT_ID_LEN} of a-z, 0-9, '_' and '-', starting with a letter or digit"
            ))
        }
    }

    pub fn local() -> TenantId {
        TenantId(LOCAL_TENANT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The opaque value the reasoner partitions its identity cache by: SHA-256 over a secret
    /// only this edge's database knows and the tenant id, so the cloud can tell two tenants
    /// apart but learns neither name, and cannot link tenants across edges.
    pub fn cache_partition(&self, secret: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"slc-tenant-cache-partition/v1\0");
        hasher.update((secret.len() as u64).to_be_bytes());
        hasher.update(secret);
        hasher.update(self.0.as_bytes());
        hex::encode(hasher.finalize())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Who a request acts for, set by the auth middleware on every non-public route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant's key, or keyless mode (then `keyed` is false: one local user).
    Tenant { tenant: TenantId, keyed: bool },
    /// An `SLC_ADMIN_KEYS` key: manages tenants and reads metrics, owns no concepts.
    Operator,
}

/// The tenant a handler acts for, with the registry scoped to it. Rejects operator keys with
/// 403 (an operator owns no concepts) and a missing principal with 401.
pub struct Scope {
    pub tenant: TenantId,
    pub registry: ScopedRegistry,
    /// What the reasoner gets instead of the tenant's name (see [`TenantId::cache_partition`]).
    pub cache_partition: String,
}

impl FromRequestParts<AppState> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Tenant { tenant, .. }) => Ok(Scope {
                registry: state.registry.scoped(tenant.clone()),
                cache_partition: tenant.cache_partition(state.registry.edge_secret()),
                tenant: tenant.clone(),
            }),
            Some(Principal::Operator) => Err(ApiError::Forbidden(
                "operator keys manage tenants and own no concepts; use a tenant's key".into(),
            )),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// An operator route's guard: 403 for a tenant's key. In keyless mode the one local user is
/// its own operator.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Operator) | Some(Principal::Tenant { keyed: false, .. }) => {
                Ok(Operator)
            }
            Some(Principal::Tenant { .. }) => Err(ApiError::Forbidden(
                "this route takes an operator key (SLC_ADMIN_KEYS)".into(),
            )),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// Per-tenant quotas (`SLC_TENANT_*`), checked besides the registry-wide ones.
#[derive(Debug, Clone, Copy)]
pub struct TenantQuotas {
    pub max_concepts: usize,
    pub max_conversations: usize,
    pub max_stored_bytes: u64,
    pub requests_per_minute: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_one_rule() {
        for good in ["local", "alice", "a", "team-7_x", &"a".repeat(64)] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Alice", "-a", "_a", "a b", "a:b", "é", &"a".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_partitions_differ_per_tenant_and_per_edge_and_hide_the_name() {
        let alice = TenantId::parse("alice").unwrap();
        let bob = TenantId::parse("bob").unwrap();
        let here = alice.cache_partition(b"edge-one");
        assert_eq!(here, alice.cache_partition(b"edge-one"));
        assert_ne!(here, bob.cache_partition(b"edge-one"));
        assert_ne!(here, alice.cache_partition(b"edge-two"));
        assert_eq!(here.len(), 64);
        assert!(!here.contains("alice"));
    }
}

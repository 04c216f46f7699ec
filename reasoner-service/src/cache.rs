//! The identity cache: (model, scoped description hash) → identity, in SQLite or PostgreSQL
//! through one sqlx code path (the Any driver, `$n` placeholders, one set of migrations).
//!
//! Whose turns share a row is the [`IdentityCacheScope`]. Under `caller` (the default) the key
//! is SHA-256 over a domain tag, the caller's 32-byte digest and the description, so one caller
//! never reads another's rows and `identity_cache_hits` says nothing about what anyone else has
//! sent. Under `global` the key is the plain description SHA-256, as before scopes existed. The
//! scope is folded into the existing `description_sha256` column, so the schema is unchanged:
//! rows written under one scope are simply never looked up under the other.
//!
//! Only identities the model actually produced are stored; the authors' fallback is not, so a
//! later turn asks again. Query images never come here: the table has no column for them.
//!
//! A row never changes once written (same model, same description, same identity), so each
//! replica also keeps the rows it has seen in memory and skips the database for them. That
//! keeps a busy replica's turns off the connection pool; the lock is held for a map lookup,
//! never across an await.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use shared_types::Identity;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Whose turns share cached identities (`--identity-cache-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IdentityCacheScope {
    /// Each tenant of each caller has its own cache: the caller's key partitioned further by
    /// the edge's opaque per-tenant value (`x-slc-cache-partition`), so one tenant's
    /// descriptions never influence or reveal another's behind the same edge. A request
    /// without that header is partitioned by its caller alone, as under `caller`.
    #[default]
    Tenant,
    /// Each caller (bearer key) has its own cache; one caller's hits and misses say nothing
    /// about another's descriptions. Without authentication every request is the same caller.
    Caller,
    /// One cache for everybody: fewer Table 7 calls, but `identity_cache_hits` tells a caller
    /// whether someone else sent the same description before.
    Global,
}

/// Who is asking, as far as the cache is concerned: the SHA-256 of the bearer key presented
/// (and accepted), or [`Caller::ANONYMOUS`] when authentication is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub [u8; 32]);

impl Caller {
    /// Every request when no keys are configured. No key hashes to all zeros in practice.
    pub const ANONYMOUS: Caller = Caller([0; 32]);

    /// This caller narrowed to one of its tenants (the edge's opaque partition value): a
    /// digest of both, domain-separated so it equals no plain caller's digest.
    pub fn within_partition(self, partition: &str) -> Caller {
        let mut hasher = Sha256::new();
        hasher.update(b"slc-identity-cache/tenant/v1\0");
        hasher.update(self.0);
        hasher.update(partition.as_bytes());
        Caller(hasher.finalize().into())
    }
}

/// The longest `x-slc-cache-partition` taken (the edge sends 64 hex digits).
pub const MAX_PARTITION_LEN: usize = 128;

/// Domain tag of the caller-scoped key, so that its digests can never equal a plain
/// description hash (the `global` scope's key) computed over some other text.
const CALLER_SCOPE_TAG: &[u8] = b"slc-identity-cache/caller/v1\0";

/// The cache key's second half for `description` as seen by `caller` under `scope`, lowercase
/// hex. The caller digest has a fixed length, so tag ‖ digest ‖ description is unambiguous.
pub fn identity_cache_key(scope: IdentityCacheScope, caller: Caller, description: &str) -> String {
    match scope {
        IdentityCacheScope::Global => description_sha256(description),
        // Under `tenant` the caller was narrowed to its partition when the request came in.
        IdentityCacheScope::Caller | IdentityCacheScope::Tenant => {
            let mut hasher = Sha256::new();
            hasher.update(CALLER_SCOPE_TAG);
            hasher.update(caller.0);
            hasher.update(description.as_bytes());
            lowercase_hex(&hasher.finalize())
        }
    }
}

/// SHA-256 of the description's UTF-8 bytes, lowercase hex: the `global` scope's key.
pub fn description_sha256(description: &str) -> String {
    lowercase_hex(&Sha256::digest(description.as_bytes()))
}

fn lowercase_hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Once per concept per turn: one allocation, not one per byte.
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(HEX[usize::from(byte >> 4)] as char);
        hex.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    hex
}

/// Entries kept in memory before the memo starts over (a few hundred bytes each).
const MEMO_CAPACITY: usize = 100_000;

#[derive(Clone)]
pub struct IdentityCache {
    pool: AnyPool,
    /// (model, scoped description hash) → identity, for rows this replica has read or written.
    memo: Arc<RwLock<HashMap<(String, String), Identity>>>,
}

impl IdentityCache {
    /// Connects and runs the migrations (idempotent: a database that has them already is fine).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            memo: Arc::default(),
        })
    }

    /// A cheap round trip for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// The cached identities among `hashes`, by hash.
    pub async fn lookup(
        &self,
        model: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, Identity>, sqlx::Error> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let memo = self
                .memo
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for hash in hashes {
                match memo.get(&(model.to_owned(), hash.clone())) {
                    Some(identity) => {
                        found.insert(hash.clone(), identity.clone());
                    }
                    None => missing.push(hash.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let from_database = self.lookup_database(model, &missing).await?;
        self.remember(model, from_database.iter());
        found.extend(from_database);
        Ok(found)
    }

    fn remember<'a>(&self, model: &str, entries: impl Iterator<Item = (&'a String, &'a Identity)>) {
        let mut memo = self
            .memo
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (hash, identity) in entries {
            if memo.len() >= MEMO_CAPACITY {
                memo.clear();
            }
            memo.insert((model.to_owned(), hash.clone()), identity.clone());
        }
    }

    async fn lookup_database(
        &self,
        model: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, Identity>, sqlx::Error> {
        let placeholders: Vec<String> = (0..hashes.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT description_sha256, category, attributes FROM identity_cache \
             WHERE model = $1 AND description_sha256 IN ({})",
            placeholders.join(", ")
        );
        // Only numbered placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(model);
        for hash in hashes {
            query = query.bind(hash);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>(0)?,
                    Identity {
                        category: row.try_get(1)?,
                        attributes: row.try_get(2)?,
                    },
                ))
            })
            .collect()
    }

    /// Stores extracted identities in one transaction. A row another replica wrote first wins:
    /// both came from the same model and description.
    pub async fn store(
        &self,
        model: &str,
        entries: &[(String, Identity)],
    ) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        let mut transaction = self.pool.begin().await?;
        for (hash, identity) in entries {
            sqlx::query(
                "INSERT INTO identity_cache \
                 (model, description_sha256, category, attributes, created_unix_ms) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (model, description_sha256) DO NOTHING",
            )
            .bind(model)
            .bind(hash)
            .bind(&identity.category)
            .bind(&identity.attributes)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        self.remember(
            model,
            entries.iter().map(|(hash, identity)| (hash, identity)),
        );
        Ok(())
    }

    /// Rows in the cache, for tests and operators.
    pub async fn row_count(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) FROM identity_cache")
            .fetch_one(&self.pool)
            .await?;
        row.try_get(0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_hash_is_lowercase_hex_sha256() {
        // FIPS 180-2's test vector.
        assert_eq!(
            description_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(description_sha256("").len(), 64);
    }

    #[test]
    fn caller_scoped_keys_differ_per_caller_and_from_the_global_key() {
        let description = "<bo> is a puppy.";
        let alice = Caller(Sha256::digest(b"alice-key").into());
        let bob = Caller(Sha256::digest(b"bob-key").into());
        let global = identity_cache_key(IdentityCacheScope::Global, alice, description);
        assert_eq!(global, description_sha256(description));
        assert_eq!(
            global,
            identity_cache_key(IdentityCacheScope::Global, bob, description)
        );
        let for_alice = identity_cache_key(IdentityCacheScope::Caller, alice, description);
        let for_bob = identity_cache_key(IdentityCacheScope::Caller, bob, description);
        let anonymous =
            identity_cache_key(IdentityCacheScope::Caller, Caller::ANONYMOUS, description);
        assert_ne!(for_alice, for_bob);
        assert_ne!(for_alice, global);
        assert_ne!(anonymous, global);
        assert_eq!(for_alice.len(), 64);
        assert_eq!(
            for_alice,
            identity_cache_key(IdentityCacheScope::Caller, alice, description)
        );
    }
}

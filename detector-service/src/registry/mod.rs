//! The concept registry: concepts, their content-hashed reference images and their CLIP
//! embedding, conversations (`conversations.rs`) and scenarios (`scenarios.rs`), on SQLite (a file in WAL mode, the default) or PostgreSQL with the same queries.
//!
//! Writes are one transaction each. Callers validate and embed everything first, so the only
//! way a registration can stop half-way is a crash, and the transaction leaves nothing then.
//!
//! Every row carries its tenant and every tenant's query goes through [`ScopedRegistry`]
//! (`concepts.rs`), which adds `tenant = $1` to each statement: the one place scoping lives.
//! [`Registry`] itself only connects, counts registry-wide, and runs the operator's tenant
//! operations (`tenants.rs`). SQLite runs with `secure_delete`, so deleted rows are zeroed
//! in the file rather than left in free pages.

use std::time::Duration;

use shared_types::{Concept, ConceptId};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::tenants::TenantId;

mod concepts;
mod conversations;
mod error;
mod scenarios;
mod tenants;
mod time_format;
pub use concepts::{ExportedConcept, ScopedRegistry};
pub use conversations::{ConversationRecord, NewTurn};
pub use error::RegistryError;
pub use scenarios::ScenarioRecord;
pub use tenants::TenantUsage;
pub use time_format::now_rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One reference image, validated and hashed, ready to store.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub sha256: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// A concept's images with its embedding, computed before any write.
#[derive(Debug, Clone)]
pub struct EmbeddedImages {
    pub images: Vec<NewImage>,
    pub embedding: Vec<f32>,
    pub clip_model: String,
}

/// A concept as the edge uses it internally, embedding included (never sent to the cloud).
#[derive(Debug, Clone)]
pub struct ConceptRecord {
    /// `concept.id`, validated.
    pub id: ConceptId,
    pub concept: Concept,
    pub embedding: Vec<f32>,
    /// The CLIP model that made `embedding`; embeddings of different models do not compare.
    pub clip_model: String,
}

/// How long a SQLite statement waits for another connection's lock before it fails with
/// `SQLITE_BUSY` (then a 503 `database_unavailable`, see [`RegistryError::is_unavailable`]).
pub const DEFAULT_SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Test hook for the crash-atomicity test: sleep inside the registration transaction
    /// after the concept row and the first image are written. Never set in production.
    pub pause_inside_registration: Option<Duration>,
    /// SQLite's busy timeout on every connection of the pool, set explicitly rather than left
    /// to the driver's default (tests shorten it to reach the 503 quickly).
    pub sqlite_busy_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            pause_inside_registration: None,
            sqlite_busy_timeout: DEFAULT_SQLITE_BUSY_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    pool: AnyPool,
    backend: Backend,
    options: RegistryOptions,
    /// This edge's random secret behind the tenants' cache partitions (`edge_secrets`).
    edge_secret: EdgeSecret,
}

/// Kept out of `Debug` output, and so out of logs.
#[derive(Clone)]
struct EdgeSecret(std::sync::Arc<Vec<u8>>);

impl std::fmt::Debug for EdgeSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EdgeSecret(..)")
    }
}

impl Registry {
    /// Connects (creating the SQLite file when missing) and applies the migrations.
    pub async fn connect(url: &str, options: RegistryOptions) -> Result<Self, RegistryError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(RegistryError::UnsupportedUrl(url.to_string()));
        };
        let mut pool_options = AnyPoolOptions::new().max_connections(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        });
        if backend == Backend::Sqlite {
            // The Any driver builds SQLite's options from the URL, which has no busy timeout,
            // so each new connection sets it itself.
            let busy_timeout_ms = options.sqlite_busy_timeout.as_millis();
            pool_options = pool_options.after_connect(move |connection, _| {
                Box::pin(async move {
                    let pragma = format!("PRAGMA busy_timeout = {busy_timeout_ms}");
                    sqlx::query(sqlx::AssertSqlSafe(pragma))
                        .fetch_all(&mut *connection)
                        .await?;
                    // Deleted photos and descriptions are overwritten, not left in free pages
                    // (a tenant's deletion must leave nothing in the file).
                    sqlx::query("PRAGMA secure_delete = ON")
                        .fetch_all(&mut *connection)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect(url).await?;
        match backend {
            Backend::Sqlite => {
                // WAL lets readers proceed during a write; it is a property of the file.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .fetch_all(&pool)
                    .await?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            }
        }
        let edge_secret = EdgeSecret(std::sync::Arc::new(load_edge_secret(&pool).await?));
        Ok(Registry {
            pool,
            backend,
            options,
            edge_secret,
        })
    }

    /// The registry as one tenant sees it: every query scoped to `tenant`.
    pub fn scoped(&self, tenant: TenantId) -> ScopedRegistry {
        ScopedRegistry::new(self.clone(), tenant)
    }

    pub fn edge_secret(&self) -> &[u8] {
        &self.edge_secret.0
    }

    pub(crate) fn options(&self) -> &RegistryOptions {
        &self.options
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Bytes of stored reference images of every tenant, leaving out those of concept
    /// `except` of `tenant` (a concept whose images a write is about to replace).
    pub async fn stored_bytes(
        &self,
        tenant: &TenantId,
        except: Option<&ConceptId>,
    ) -> Result<i64, RegistryError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(LENGTH(bytes)), 0) AS n FROM concept_images \
             WHERE NOT (tenant = $1 AND concept_id = $2)",
        )
        .bind(tenant.as_str())
        .bind(except.map_or("", ConceptId::bare))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Row counts of both tables over every tenant: the registry-wide quota, tests.
    pub async fn row_counts(&self) -> Result<(i64, i64), RegistryError> {
        let concepts: i64 = sqlx::query("SELECT COUNT(*) AS n FROM concepts")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let images: i64 = sqlx::query("SELECT COUNT(*) AS n FROM concept_images")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((concepts, images))
    }
}

/// Reads this edge's secret, making it on first start. Two uuid v4s give 244 random bits; the
/// insert is a no-op when another replica made it first.
async fn load_edge_secret(pool: &AnyPool) -> Result<Vec<u8>, RegistryError> {
    let fresh = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(
        "INSERT INTO edge_secrets (name, value) VALUES ('cache_partition', $1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(fresh.as_str())
    .execute(pool)
    .await?;
    let row = sqlx::query("SELECT value FROM edge_secrets WHERE name = 'cache_partition'")
        .fetch_one(pool)
        .await?;
    let value: String = row.try_get("value")?;
    Ok(value.into_bytes())
}

//! The concept registry: concepts, their content-hashed reference images and their CLIP
//! embedding, conversations (`conversations.rs`) and scenarios (`scenarios.rs`), on SQLite (a file in WAL mode, the default) or PostgreSQL with the same queries.
//!
//! Writes are one transaction each. Callers validate and embed everything first, so the only
//! way a registration can stop half-way is a crash, and the transaction leaves nothing then.

use std::time::Duration;

use shared_types::{Concept, ConceptId, ConceptImage};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::embedding::{embedding_from_bytes, embedding_to_bytes};

mod conversations;
mod error;
mod scenarios;
mod time_format;
pub use conversations::{ConversationRecord, NewTurn};
pub use error::RegistryError;
use error::is_unique_violation;
pub use scenarios::ScenarioRecord;
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
                        .fetch_all(connection)
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
        Ok(Registry {
            pool,
            backend,
            options,
        })
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

    /// Writes a new concept and all its images in one transaction.
    pub async fn insert(
        &self,
        id: &ConceptId,
        description: &str,
        embedded: EmbeddedImages,
    ) -> Result<ConceptRecord, RegistryError> {
        let now = now_rfc3339();
        let mut transaction = self.pool.begin().await?;
        // The insert comes first in the transaction (no read before it), so that on SQLite
        // the transaction takes the write lock at once instead of upgrading a read snapshot,
        // and a duplicate id is caught by the primary key on both databases.
        let inserted = sqlx::query(
            "INSERT INTO concepts (id, description, embedding, embedding_dim, clip_model, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.bare())
        .bind(description)
        .bind(embedding_to_bytes(&embedded.embedding))
        .bind(embedded.embedding.len() as i64)
        .bind(embedded.clip_model.as_str())
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if is_unique_violation(&error) {
                return Err(RegistryError::AlreadyExists(id.clone()));
            }
            return Err(error.into());
        }
        self.write_images(&mut transaction, id, &embedded.images)
            .await?;
        self.commit_and_read(transaction, id).await
    }

    /// Commits a write and reads the concept back as stored.
    async fn commit_and_read(
        &self,
        transaction: sqlx::Transaction<'_, sqlx::Any>,
        id: &ConceptId,
    ) -> Result<ConceptRecord, RegistryError> {
        transaction.commit().await?;
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.clone()))
    }

    async fn write_images(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &ConceptId,
        images: &[NewImage],
    ) -> Result<(), RegistryError> {
        for (position, image) in images.iter().enumerate() {
            sqlx::query(
                "INSERT INTO concept_images (concept_id, position, sha256, content_type, width, \
                 height, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.bare())
            .bind(position as i64)
            .bind(image.sha256.as_str())
            .bind(image.content_type.as_str())
            .bind(i64::from(image.width))
            .bind(i64::from(image.height))
            .bind(image.bytes.clone())
            .execute(&mut **transaction)
            .await?;
            if position == 0
                && let Some(pause) = self.options.pause_inside_registration
            {
                tracing::warn!(
                    ?pause,
                    "test hook: pausing inside a registration transaction"
                );
                eprintln!("SLC-TEST-HOOK: paused inside registration");
                tokio::time::sleep(pause).await;
            }
        }
        Ok(())
    }

    /// Replaces the description, and the images with their embedding when given.
    pub async fn update(
        &self,
        id: &ConceptId,
        description: &str,
        embedded: Option<EmbeddedImages>,
    ) -> Result<ConceptRecord, RegistryError> {
        let now = now_rfc3339();
        let mut transaction = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE concepts SET description = $1, updated_at = $2 WHERE id = $3")
                .bind(description)
                .bind(now.as_str())
                .bind(id.bare())
                .execute(&mut *transaction)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(RegistryError::NotFound(id.clone()));
        }
        if let Some(embedded) = embedded {
            sqlx::query(
                "UPDATE concepts SET embedding = $1, embedding_dim = $2, clip_model = $3 WHERE id = $4",
            )
            .bind(embedding_to_bytes(&embedded.embedding))
            .bind(embedded.embedding.len() as i64)
            .bind(embedded.clip_model.as_str())
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
            sqlx::query("DELETE FROM concept_images WHERE concept_id = $1")
                .bind(id.bare())
                .execute(&mut *transaction)
                .await?;
            self.write_images(&mut transaction, id, &embedded.images)
                .await?;
            scenarios::touch_scenarios_with(&mut transaction, id).await?;
        }
        self.commit_and_read(transaction, id).await
    }

    pub async fn delete(&self, id: &ConceptId) -> Result<(), RegistryError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM concept_images WHERE concept_id = $1")
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
        let deleted = sqlx::query("DELETE FROM concepts WHERE id = $1")
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(RegistryError::NotFound(id.clone()));
        }
        // What was stored about the concept goes with it: the conversation turns that used
        // it, its pseudonyms, its scenario memberships.
        conversations::forget_concept(&mut transaction, id).await?;
        scenarios::forget_concept(&mut transaction, id).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn get(&self, id: &ConceptId) -> Result<Option<ConceptRecord>, RegistryError> {
        let row = sqlx::query(
            "SELECT id, description, embedding, clip_model, created_at, updated_at FROM concepts \
             WHERE id = $1",
        )
        .bind(id.bare())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let images = self.image_metadata(id).await?;
        Ok(Some(record_from_row(&row, images)?))
    }

    /// The records of `ids` in the given order, or the ids that are not registered.
    pub async fn get_many(
        &self,
        ids: &[ConceptId],
    ) -> Result<Result<Vec<ConceptRecord>, Vec<ConceptId>>, RegistryError> {
        let mut records = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.get(id).await? {
                Some(record) => records.push(record),
                None => missing.push(id.clone()),
            }
        }
        Ok(if missing.is_empty() {
            Ok(records)
        } else {
            Err(missing)
        })
    }

    /// Every concept, by id.
    pub async fn list(&self) -> Result<Vec<ConceptRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT id, description, embedding, clip_model, created_at, updated_at FROM concepts \
             ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut concepts = Vec::with_capacity(rows.len());
        for row in rows {
            let images = self.image_metadata(&stored_id(&row)?).await?;
            concepts.push(record_from_row(&row, images)?);
        }
        Ok(concepts)
    }

    /// Every registered id, sorted: what pseudonymization must hide besides the turn's own.
    pub async fn ids(&self) -> Result<Vec<ConceptId>, RegistryError> {
        let rows = sqlx::query("SELECT id FROM concepts ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_id).collect()
    }

    async fn image_metadata(&self, id: &ConceptId) -> Result<Vec<ConceptImage>, RegistryError> {
        let rows = sqlx::query(
            "SELECT position, sha256, content_type, width, height FROM concept_images \
             WHERE concept_id = $1 ORDER BY position",
        )
        .bind(id.bare())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ConceptImage {
                    index: row.try_get::<i64, _>("position")? as u32,
                    sha256: row.try_get("sha256")?,
                    width: row.try_get::<i64, _>("width")? as u32,
                    height: row.try_get::<i64, _>("height")? as u32,
                    content_type: row.try_get("content_type")?,
                })
            })
            .collect()
    }

    /// The stored bytes and content type of image `position` of concept `id`.
    pub async fn image(
        &self,
        id: &ConceptId,
        position: u32,
    ) -> Result<Option<(String, Vec<u8>)>, RegistryError> {
        let row = sqlx::query(
            "SELECT content_type, bytes FROM concept_images WHERE concept_id = $1 AND position = $2",
        )
        .bind(id.bare())
        .bind(i64::from(position))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((row.try_get("content_type")?, row.try_get("bytes")?))),
            None => Ok(None),
        }
    }

    /// Bytes of stored reference images, leaving out those of `except` (a concept whose images
    /// a write is about to replace).
    pub async fn stored_bytes(&self, except: Option<&ConceptId>) -> Result<i64, RegistryError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(LENGTH(bytes)), 0) AS n FROM concept_images WHERE concept_id <> $1",
        )
        .bind(except.map_or("", ConceptId::bare))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Row counts of both tables, for tests and diagnostics.
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

fn record_from_row(
    row: &sqlx::any::AnyRow,
    images: Vec<ConceptImage>,
) -> Result<ConceptRecord, RegistryError> {
    let embedding: Vec<u8> = row.try_get("embedding")?;
    let id = stored_id(row)?;
    Ok(ConceptRecord {
        concept: Concept {
            id: id.bare().to_owned(),
            description: row.try_get("description")?,
            images,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            adapter: None,
        },
        embedding: embedding_from_bytes(&embedding),
        clip_model: row.try_get("clip_model")?,
        id,
    })
}

fn stored_id(row: &sqlx::any::AnyRow) -> Result<ConceptId, RegistryError> {
    let raw: String = row.try_get("id")?;
    ConceptId::parse(&raw).map_err(|error| RegistryError::Corrupt(error.to_string()))
}

//! One tenant's concepts. Every statement here has `tenant = $1`: a [`ScopedRegistry`] is the
//! only way to a tenant's rows, and it is made from the request's authenticated principal.

use shared_types::{Concept, ConceptId, ConceptImage};
use sqlx::Row;

use super::error::is_unique_violation;
use super::{ConceptRecord, EmbeddedImages, NewImage, Registry, RegistryError, now_rfc3339};
use crate::embedding::{embedding_from_bytes, embedding_to_bytes};
use crate::tenants::TenantId;

/// The registry as one tenant sees it.
#[derive(Debug, Clone)]
pub struct ScopedRegistry {
    registry: Registry,
    tenant: TenantId,
}

/// A concept with its images' bytes, for the tenant's export.
#[derive(Debug, Clone)]
pub struct ExportedConcept {
    pub concept: Concept,
    pub clip_model: String,
    pub images: Vec<(ConceptImage, Vec<u8>)>,
}

const CONCEPT_COLUMNS: &str = "id, description, embedding, clip_model, created_at, updated_at";

impl ScopedRegistry {
    pub(super) fn new(registry: Registry, tenant: TenantId) -> Self {
        ScopedRegistry { registry, tenant }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The registry-wide view, for the registry-wide quotas.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn t(&self) -> &str {
        self.tenant.as_str()
    }

    /// Writes a new concept and all its images in one transaction.
    pub async fn insert(
        &self,
        id: &ConceptId,
        description: &str,
        embedded: EmbeddedImages,
    ) -> Result<ConceptRecord, RegistryError> {
        let now = now_rfc3339();
        let mut transaction = self.registry.pool().begin().await?;
        // The insert comes first in the transaction (no read before it), so that on SQLite
        // the transaction takes the write lock at once instead of upgrading a read snapshot,
        // and a duplicate id is caught by the primary key on both databases.
        let inserted = sqlx::query(
            "INSERT INTO concepts (tenant, id, description, embedding, embedding_dim, clip_model, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.t())
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
                "INSERT INTO concept_images (tenant, concept_id, position, sha256, content_type, \
                 width, height, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(self.t())
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
                && let Some(pause) = self.registry.options().pause_inside_registration
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
        let mut transaction = self.registry.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE concepts SET description = $2, updated_at = $3 WHERE tenant = $1 AND id = $4",
        )
        .bind(self.t())
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
                "UPDATE concepts SET embedding = $2, embedding_dim = $3, clip_model = $4 \
                 WHERE tenant = $1 AND id = $5",
            )
            .bind(self.t())
            .bind(embedding_to_bytes(&embedded.embedding))
            .bind(embedded.embedding.len() as i64)
            .bind(embedded.clip_model.as_str())
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
            sqlx::query("DELETE FROM concept_images WHERE tenant = $1 AND concept_id = $2")
                .bind(self.t())
                .bind(id.bare())
                .execute(&mut *transaction)
                .await?;
            self.write_images(&mut transaction, id, &embedded.images)
                .await?;
            super::scenarios::touch_scenarios_with(&mut transaction, self.t(), id).await?;
        }
        self.commit_and_read(transaction, id).await
    }

    pub async fn delete(&self, id: &ConceptId) -> Result<(), RegistryError> {
        let mut transaction = self.registry.pool().begin().await?;
        sqlx::query("DELETE FROM concept_images WHERE tenant = $1 AND concept_id = $2")
            .bind(self.t())
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
        let deleted = sqlx::query("DELETE FROM concepts WHERE tenant = $1 AND id = $2")
            .bind(self.t())
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(RegistryError::NotFound(id.clone()));
        }
        // What was stored about the concept goes with it: the conversation turns that used
        // it, its pseudonyms, its scenario memberships.
        super::conversations::forget_concept(&mut transaction, self.t(), id).await?;
        super::scenarios::forget_concept(&mut transaction, self.t(), id).await?;
        transaction.commit().await?;
        self.registry.checkpoint().await;
        Ok(())
    }

    pub async fn get(&self, id: &ConceptId) -> Result<Option<ConceptRecord>, RegistryError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONCEPT_COLUMNS} FROM concepts WHERE tenant = $1 AND id = $2"
        )))
        .bind(self.t())
        .bind(id.bare())
        .fetch_optional(self.registry.pool())
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

    /// Every concept of the tenant, by id.
    pub async fn list(&self) -> Result<Vec<ConceptRecord>, RegistryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONCEPT_COLUMNS} FROM concepts WHERE tenant = $1 ORDER BY id"
        )))
        .bind(self.t())
        .fetch_all(self.registry.pool())
        .await?;
        let mut concepts = Vec::with_capacity(rows.len());
        for row in rows {
            let images = self.image_metadata(&stored_id(&row)?).await?;
            concepts.push(record_from_row(&row, images)?);
        }
        Ok(concepts)
    }

    /// Every id of the tenant, sorted: what pseudonymization must hide besides the turn's own.
    pub async fn ids(&self) -> Result<Vec<ConceptId>, RegistryError> {
        let rows = sqlx::query("SELECT id FROM concepts WHERE tenant = $1 ORDER BY id")
            .bind(self.t())
            .fetch_all(self.registry.pool())
            .await?;
        rows.iter().map(stored_id).collect()
    }

    async fn image_metadata(&self, id: &ConceptId) -> Result<Vec<ConceptImage>, RegistryError> {
        let rows = sqlx::query(
            "SELECT position, sha256, content_type, width, height FROM concept_images \
             WHERE tenant = $1 AND concept_id = $2 ORDER BY position",
        )
        .bind(self.t())
        .bind(id.bare())
        .fetch_all(self.registry.pool())
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
            "SELECT content_type, bytes FROM concept_images \
             WHERE tenant = $1 AND concept_id = $2 AND position = $3",
        )
        .bind(self.t())
        .bind(id.bare())
        .bind(i64::from(position))
        .fetch_optional(self.registry.pool())
        .await?;
        match row {
            Some(row) => Ok(Some((row.try_get("content_type")?, row.try_get("bytes")?))),
            None => Ok(None),
        }
    }

    /// Bytes of the tenant's stored images, leaving out those of `except` (a concept whose
    /// images a write is about to replace).
    pub async fn stored_bytes(&self, except: Option<&ConceptId>) -> Result<i64, RegistryError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(LENGTH(bytes)), 0) AS n FROM concept_images \
             WHERE tenant = $1 AND concept_id <> $2",
        )
        .bind(self.t())
        .bind(except.map_or("", ConceptId::bare))
        .fetch_one(self.registry.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// How many concepts the tenant has.
    pub async fn concept_count(&self) -> Result<i64, RegistryError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM concepts WHERE tenant = $1")
            .bind(self.t())
            .fetch_one(self.registry.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Every concept with its images' bytes: the tenant's export.
    pub async fn export(&self) -> Result<Vec<ExportedConcept>, RegistryError> {
        let mut exported = Vec::new();
        for record in self.list().await? {
            let mut images = Vec::with_capacity(record.concept.images.len());
            for image in &record.concept.images {
                let bytes = self
                    .image(&record.id, image.index)
                    .await?
                    .map(|(_, bytes)| bytes)
                    .unwrap_or_default();
                images.push((image.clone(), bytes));
            }
            exported.push(ExportedConcept {
                concept: record.concept,
                clip_model: record.clip_model,
                images,
            });
        }
        Ok(exported)
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

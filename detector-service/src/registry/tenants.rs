//! The operator's view of tenants: usage per tenant, and a tenant's deletion. Tenants are the
//! distinct `tenant` values of the rows (keys name them; no table lists them).

use sqlx::Row;

use super::{Backend, Registry, RegistryError};
use crate::tenants::TenantId;

/// What one tenant holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TenantUsage {
    pub tenant: String,
    pub concepts: i64,
    pub images: i64,
    /// Bytes of stored reference images.
    pub stored_bytes: i64,
}

impl Registry {
    /// Every tenant that holds anything, by id.
    pub async fn tenants_usage(&self) -> Result<Vec<TenantUsage>, RegistryError> {
        let rows = sqlx::query("SELECT DISTINCT tenant FROM concepts ORDER BY tenant")
            .fetch_all(self.pool())
            .await?;
        let mut usage = Vec::with_capacity(rows.len());
        for row in rows {
            let raw: String = row.try_get("tenant")?;
            let tenant =
                TenantId::parse(&raw).map_err(|why| RegistryError::Corrupt(why.to_string()))?;
            usage.push(self.tenant_usage(&tenant).await?);
        }
        Ok(usage)
    }

    pub async fn tenant_usage(&self, tenant: &TenantId) -> Result<TenantUsage, RegistryError> {
        let concepts: i64 = sqlx::query("SELECT COUNT(*) AS n FROM concepts WHERE tenant = $1")
            .bind(tenant.as_str())
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(bytes)), 0) AS b FROM concept_images \
             WHERE tenant = $1",
        )
        .bind(tenant.as_str())
        .fetch_one(self.pool())
        .await?;
        Ok(TenantUsage {
            tenant: tenant.to_string(),
            concepts,
            images: row.try_get("n")?,
            stored_bytes: row.try_get("b")?,
        })
    }

    /// Removes every row of `tenant` in one transaction and says what was removed. On SQLite
    /// the write-ahead log is then checkpointed and truncated, so that with `secure_delete`
    /// neither the database file nor the log keeps a byte of what was deleted.
    pub async fn delete_tenant(&self, tenant: &TenantId) -> Result<TenantUsage, RegistryError> {
        let removed = self.tenant_usage(tenant).await?;
        let mut transaction = self.pool().begin().await?;
        // Every table that has a tenant column: concepts with their photos, conversations with
        // their turns, scenarios with their members.
        for table in [
            "concept_images",
            "concepts",
            "conversation_turn_concepts",
            "conversation_aliases",
            "conversation_turns",
            "conversations",
            "scenario_members",
            "scenarios",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE tenant = $1"
            )))
            .bind(tenant.as_str())
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        self.checkpoint().await;
        Ok(removed)
    }

    /// SQLite: copies the log into the file and truncates it, so deleted content's old frames
    /// do not linger there. A checkpoint blocked by a reader is retried by SQLite's next
    /// automatic one; it is logged, not an error.
    pub(crate) async fn checkpoint(&self) {
        if self.backend() != Backend::Sqlite {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_all(self.pool())
            .await
        {
            tracing::warn!(%error, "checkpointing the registry's write-ahead log failed");
        }
    }
}

//! Scenarios, named groups of concepts, in the registry's database.
//!
//! Every write that changes what a scenario's Eq. 1 adapter choice depends on (its members,
//! a member's deletion, a member's new images) bumps its `revision` in the same transaction,
//! so a cache keyed by (tenant, id, revision) is never stale. Every statement is scoped by
//! the tenant: scenarios are reached only through a [`ScopedRegistry`].

use shared_types::{ConceptId, Scenario};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::error::is_unique_violation;
use super::{RegistryError, ScopedRegistry, now_rfc3339};

/// A stored scenario with its members as ids.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRecord {
    /// The tenant that owns it (scenario ids are unique per tenant only).
    pub tenant: crate::tenants::TenantId,
    pub id: ConceptId,
    pub members: Vec<ConceptId>,
    pub scenario: Scenario,
}

impl ScopedRegistry {
    /// Stores a new scenario; the caller has checked that the members are registered.
    pub async fn insert_scenario(
        &self,
        id: &ConceptId,
        description: &str,
        members: &[ConceptId],
    ) -> Result<ScenarioRecord, RegistryError> {
        let now = now_rfc3339();
        let mut transaction = self.registry().pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO scenarios (tenant, id, description, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $5)",
        )
        .bind(self.t())
        .bind(id.bare())
        .bind(description)
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if is_unique_violation(&error) {
                return Err(RegistryError::ScenarioExists(id.clone()));
            }
            return Err(error.into());
        }
        write_members(&mut transaction, self.t(), id, members).await?;
        self.commit_and_read_scenario(transaction, id).await
    }

    /// Replaces a scenario's members and description, bumping its revision.
    pub async fn update_scenario(
        &self,
        id: &ConceptId,
        description: &str,
        members: &[ConceptId],
    ) -> Result<ScenarioRecord, RegistryError> {
        let now = now_rfc3339();
        let mut transaction = self.registry().pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE scenarios SET description = $1, revision = revision + 1, updated_at = $2 \
             WHERE tenant = $3 AND id = $4",
        )
        .bind(description)
        .bind(now.as_str())
        .bind(self.t())
        .bind(id.bare())
        .execute(&mut *transaction)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(RegistryError::ScenarioNotFound(id.clone()));
        }
        clear_members(&mut transaction, self.t(), id).await?;
        write_members(&mut transaction, self.t(), id, members).await?;
        self.commit_and_read_scenario(transaction, id).await
    }

    async fn commit_and_read_scenario(
        &self,
        transaction: sqlx::Transaction<'_, sqlx::Any>,
        id: &ConceptId,
    ) -> Result<ScenarioRecord, RegistryError> {
        transaction.commit().await?;
        self.scenario(id)
            .await?
            .ok_or_else(|| RegistryError::ScenarioNotFound(id.clone()))
    }

    pub async fn delete_scenario(&self, id: &ConceptId) -> Result<(), RegistryError> {
        let mut transaction = self.registry().pool().begin().await?;
        let deleted = sqlx::query("DELETE FROM scenarios WHERE tenant = $1 AND id = $2")
            .bind(self.t())
            .bind(id.bare())
            .execute(&mut *transaction)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(RegistryError::ScenarioNotFound(id.clone()));
        }
        clear_members(&mut transaction, self.t(), id).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn scenario(&self, id: &ConceptId) -> Result<Option<ScenarioRecord>, RegistryError> {
        let row = sqlx::query(
            "SELECT id, description, revision, created_at, updated_at FROM scenarios \
             WHERE tenant = $1 AND id = $2",
        )
        .bind(self.t())
        .bind(id.bare())
        .fetch_optional(self.registry().pool())
        .await?;
        match row {
            Some(row) => Ok(Some(self.scenario_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    /// Every scenario, by id.
    pub async fn scenarios(&self) -> Result<Vec<ScenarioRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT id, description, revision, created_at, updated_at FROM scenarios \
             WHERE tenant = $1 ORDER BY id",
        )
        .bind(self.t())
        .fetch_all(self.registry().pool())
        .await?;
        let mut scenarios = Vec::with_capacity(rows.len());
        for row in &rows {
            scenarios.push(self.scenario_from_row(row).await?);
        }
        Ok(scenarios)
    }

    async fn scenario_from_row(&self, row: &AnyRow) -> Result<ScenarioRecord, RegistryError> {
        let id = parse_stored(row.try_get("id")?)?;
        let rows = sqlx::query(
            "SELECT concept_id FROM scenario_members WHERE tenant = $1 AND scenario_id = $2 \
             ORDER BY ordinal",
        )
        .bind(self.t())
        .bind(id.bare())
        .fetch_all(self.registry().pool())
        .await?;
        let members = rows
            .iter()
            .map(|row| parse_stored(row.try_get("concept_id")?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ScenarioRecord {
            scenario: Scenario {
                id: id.bare().to_owned(),
                description: row.try_get("description")?,
                concepts: members.iter().map(|m| m.bare().to_owned()).collect(),
                revision: row.try_get::<i64, _>("revision")? as u64,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            },
            tenant: self.tenant().clone(),
            id,
            members,
        })
    }
}

/// Inside a concept's delete: it leaves every scenario, whose revision grows.
pub(super) async fn forget_concept(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    concept: &ConceptId,
) -> Result<(), RegistryError> {
    touch_scenarios_with(transaction, tenant, concept).await?;
    sqlx::query("DELETE FROM scenario_members WHERE tenant = $1 AND concept_id = $2")
        .bind(tenant)
        .bind(concept.bare())
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Inside a concept's image replacement: the scenarios it is in get a new revision, since
/// their Eq. 1 scenario embedding changed.
pub(super) async fn touch_scenarios_with(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    concept: &ConceptId,
) -> Result<(), RegistryError> {
    sqlx::query(
        "UPDATE scenarios SET revision = revision + 1, updated_at = $1 WHERE tenant = $2 AND id IN \
         (SELECT scenario_id FROM scenario_members WHERE tenant = $2 AND concept_id = $3)",
    )
    .bind(now_rfc3339())
    .bind(tenant)
    .bind(concept.bare())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

async fn clear_members(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    id: &ConceptId,
) -> Result<(), RegistryError> {
    sqlx::query("DELETE FROM scenario_members WHERE tenant = $1 AND scenario_id = $2")
        .bind(tenant)
        .bind(id.bare())
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

async fn write_members(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    id: &ConceptId,
    members: &[ConceptId],
) -> Result<(), RegistryError> {
    for (ordinal, member) in members.iter().enumerate() {
        sqlx::query(
            "INSERT INTO scenario_members (tenant, scenario_id, ordinal, concept_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(id.bare())
        .bind(ordinal as i64)
        .bind(member.bare())
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

fn parse_stored(raw: String) -> Result<ConceptId, RegistryError> {
    ConceptId::parse(&raw).map_err(|error| RegistryError::Corrupt(error.to_string()))
}

//! Conversations and their stored turns, in the registry's database.
//!
//! A turn is appended in one transaction with the concepts it used and the conversation's
//! pseudonyms as they stand after it. Deleting a conversation deletes its turns, their
//! concepts and its pseudonyms; deleting a concept deletes every turn that used it
//! ([`forget_concept`], inside the concept's own delete transaction). Every statement is
//! scoped by the tenant, as in `concepts.rs`: conversations are reached only through a
//! [`ScopedRegistry`].

use shared_types::{ConceptId, Conversation, ConversationTurn, CueSet, TurnSummary};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Registry, RegistryError, ScopedRegistry, now_rfc3339};

/// A conversation's own row, without its turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A turn to store; the registry gives it the next index.
#[derive(Debug, Clone)]
pub struct NewTurn {
    pub question: String,
    pub answer: String,
    pub image_sha256: Option<String>,
    /// The concepts the turn used, in order.
    pub concepts: Vec<ConceptId>,
    pub raw_cues: Option<CueSet>,
    pub refined_cues: Option<CueSet>,
    pub trace: TurnSummary,
    /// The conversation's pseudonyms after the turn: `aliases[k]` is `<c{k+1}>`. `None`
    /// leaves the stored ones as they are (a turn without pseudonymization).
    pub aliases: Option<Vec<ConceptId>>,
}

/// How often an append retries when a concurrent turn of the same conversation took its index.
const APPEND_ATTEMPTS: usize = 4;

impl ScopedRegistry {
    /// A new, empty conversation with a fresh random id.
    pub async fn create_conversation(&self) -> Result<ConversationRecord, RegistryError> {
        let id = format!("conv_{}", uuid::Uuid::new_v4().simple());
        let now = now_rfc3339();
        sqlx::query(
            "INSERT INTO conversations (tenant, id, created_at, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(self.t())
        .bind(id.as_str())
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(self.registry().pool())
        .await?;
        Ok(ConversationRecord {
            id,
            created_at: now.clone(),
            updated_at: now,
        })
    }

    pub async fn conversation_record(
        &self,
        id: &str,
    ) -> Result<Option<ConversationRecord>, RegistryError> {
        let row = sqlx::query(
            "SELECT id, created_at, updated_at FROM conversations WHERE tenant = $1 AND id = $2",
        )
        .bind(self.t())
        .bind(id)
        .fetch_optional(self.registry().pool())
        .await?;
        row.map(|row| {
            Ok(ConversationRecord {
                id: row.try_get("id")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    /// How many conversations the tenant keeps (its quota).
    pub async fn conversation_count(&self) -> Result<i64, RegistryError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM conversations WHERE tenant = $1")
            .bind(self.t())
            .fetch_one(self.registry().pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Every conversation of the tenant with its turns, oldest first (for the export).
    pub async fn conversations(&self) -> Result<Vec<Conversation>, RegistryError> {
        let rows =
            sqlx::query("SELECT id FROM conversations WHERE tenant = $1 ORDER BY created_at, id")
                .bind(self.t())
                .fetch_all(self.registry().pool())
                .await?;
        let mut conversations = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            conversations.extend(self.conversation(&id).await?);
        }
        Ok(conversations)
    }

    /// The conversation with all its turns, oldest first.
    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>, RegistryError> {
        let Some(record) = self.conversation_record(id).await? else {
            return Ok(None);
        };
        let turns = self.conversation_turns(id, None).await?;
        Ok(Some(Conversation {
            id: record.id,
            created_at: record.created_at,
            updated_at: record.updated_at,
            turns,
        }))
    }

    /// The conversation's turns, oldest first; with `last`, only the newest `last` of them.
    pub async fn conversation_turns(
        &self,
        id: &str,
        last: Option<usize>,
    ) -> Result<Vec<ConversationTurn>, RegistryError> {
        let limit = last.map_or(i64::MAX, |last| last as i64);
        let rows = sqlx::query(
            "SELECT position, question, answer, image_sha256, raw_cues, refined_cues, trace, \
             created_at FROM conversation_turns WHERE tenant = $1 AND conversation_id = $2 \
             ORDER BY position DESC LIMIT $3",
        )
        .bind(self.t())
        .bind(id)
        .bind(limit)
        .fetch_all(self.registry().pool())
        .await?;
        let Some(oldest) = rows.last() else {
            return Ok(Vec::new());
        };
        // One query for the concepts of every turn read, not one per turn: `/v1/ask` reads
        // up to `MAX_HISTORY_TURNS` turns per request.
        let mut concepts = self
            .turn_concepts_from(id, oldest.try_get("position")?)
            .await?;
        rows.iter()
            .rev()
            .map(|row| {
                let position: i64 = row.try_get("position")?;
                turn_from_row(row, concepts.remove(&position).unwrap_or_default())
            })
            .collect()
    }

    /// The concepts of the turns at `from` and later, by position, in their order.
    async fn turn_concepts_from(
        &self,
        id: &str,
        from: i64,
    ) -> Result<std::collections::BTreeMap<i64, Vec<String>>, RegistryError> {
        let rows = sqlx::query(
            "SELECT position, concept_id FROM conversation_turn_concepts \
             WHERE tenant = $1 AND conversation_id = $2 AND position >= $3 \
             ORDER BY position, ordinal",
        )
        .bind(self.t())
        .bind(id)
        .bind(from)
        .fetch_all(self.registry().pool())
        .await?;
        let mut concepts = std::collections::BTreeMap::<i64, Vec<String>>::new();
        for row in &rows {
            let position: i64 = row.try_get("position")?;
            concepts
                .entry(position)
                .or_default()
                .push(stored_concept(row)?.bracketed());
        }
        Ok(concepts)
    }

    /// The concepts of the newest `last_turns` turns, newest turn first, each once: the
    /// conversation's scope.
    pub async fn conversation_scope(
        &self,
        id: &str,
        last_turns: usize,
    ) -> Result<Vec<ConceptId>, RegistryError> {
        let rows = sqlx::query(
            "SELECT c.concept_id FROM conversation_turn_concepts c \
             WHERE c.tenant = $1 AND c.conversation_id = $2 AND c.position IN (SELECT t.position \
             FROM conversation_turns t WHERE t.tenant = $1 AND t.conversation_id = $2 \
             ORDER BY t.position DESC LIMIT $3) ORDER BY c.position DESC, c.ordinal",
        )
        .bind(self.t())
        .bind(id)
        .bind(last_turns as i64)
        .fetch_all(self.registry().pool())
        .await?;
        let mut scope: Vec<ConceptId> = Vec::new();
        for row in &rows {
            let concept = stored_concept(row)?;
            if !scope.contains(&concept) {
                scope.push(concept);
            }
        }
        Ok(scope)
    }

    /// The conversation's pseudonyms: the concept at index k is `<c{k+1}>`.
    pub async fn conversation_aliases(&self, id: &str) -> Result<Vec<ConceptId>, RegistryError> {
        let rows = sqlx::query(
            "SELECT concept_id FROM conversation_aliases WHERE tenant = $1 AND conversation_id = $2 \
             ORDER BY ordinal",
        )
        .bind(self.t())
        .bind(id)
        .fetch_all(self.registry().pool())
        .await?;
        rows.iter().map(stored_concept).collect()
    }

    /// Stores a turn at the conversation's next index and returns that index. `Ok(None)` when
    /// the conversation no longer exists (deleted while the turn ran).
    pub async fn append_turn(
        &self,
        id: &str,
        turn: &NewTurn,
    ) -> Result<Option<u32>, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_append_turn(id, turn).await {
                Err(RegistryError::Database(error))
                    if attempt < APPEND_ATTEMPTS && super::error::is_unique_violation(&error) =>
                {
                    tracing::debug!(
                        conversation = id,
                        "a concurrent turn took the index; retrying"
                    );
                }
                other => return other,
            }
        }
    }

    async fn try_append_turn(
        &self,
        id: &str,
        turn: &NewTurn,
    ) -> Result<Option<u32>, RegistryError> {
        let now = now_rfc3339();
        let mut transaction = self.registry().pool().begin().await?;
        // A write first, so SQLite takes the write lock at once (see `insert`); it also says
        // whether the conversation still exists.
        let touched =
            sqlx::query("UPDATE conversations SET updated_at = $1 WHERE tenant = $2 AND id = $3")
                .bind(now.as_str())
                .bind(self.t())
                .bind(id)
                .execute(&mut *transaction)
                .await?;
        if touched.rows_affected() == 0 {
            return Ok(None);
        }
        let position: i64 = sqlx::query(
            "SELECT COALESCE(MAX(position), -1) + 1 AS next FROM conversation_turns \
             WHERE tenant = $1 AND conversation_id = $2",
        )
        .bind(self.t())
        .bind(id)
        .fetch_one(&mut *transaction)
        .await?
        .try_get("next")?;
        sqlx::query(
            "INSERT INTO conversation_turns (tenant, conversation_id, position, question, answer, \
             image_sha256, raw_cues, refined_cues, trace, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(self.t())
        .bind(id)
        .bind(position)
        .bind(turn.question.as_str())
        .bind(turn.answer.as_str())
        .bind(turn.image_sha256.clone())
        .bind(turn.raw_cues.as_ref().map(to_json))
        .bind(turn.refined_cues.as_ref().map(to_json))
        .bind(to_json(&turn.trace))
        .bind(now.as_str())
        .execute(&mut *transaction)
        .await?;
        for (ordinal, concept) in turn.concepts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO conversation_turn_concepts (tenant, conversation_id, position, \
                 ordinal, concept_id) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(self.t())
            .bind(id)
            .bind(position)
            .bind(ordinal as i64)
            .bind(concept.bare())
            .execute(&mut *transaction)
            .await?;
        }
        if let Some(aliases) = &turn.aliases {
            write_aliases(&mut transaction, self.t(), id, aliases).await?;
        }
        transaction.commit().await?;
        Ok(Some(position as u32))
    }

    /// Deletes the conversation, its turns and its pseudonyms.
    pub async fn delete_conversation(&self, id: &str) -> Result<bool, RegistryError> {
        let mut transaction = self.registry().pool().begin().await?;
        let deleted = sqlx::query("DELETE FROM conversations WHERE tenant = $1 AND id = $2")
            .bind(self.t())
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        for table in [
            "conversation_turns",
            "conversation_turn_concepts",
            "conversation_aliases",
        ] {
            let statement =
                format!("DELETE FROM {table} WHERE tenant = $1 AND conversation_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(self.t())
                .bind(id)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }
}

impl Registry {
    /// Row counts of the conversation tables (conversations, turns, turn concepts, aliases),
    /// for tests and diagnostics.
    pub async fn conversation_row_counts(&self) -> Result<[i64; 4], RegistryError> {
        let mut counts = [0; 4];
        for (count, table) in counts.iter_mut().zip([
            "conversations",
            "conversation_turns",
            "conversation_turn_concepts",
            "conversation_aliases",
        ]) {
            let statement = format!("SELECT COUNT(*) AS n FROM {table}");
            *count = sqlx::query(sqlx::AssertSqlSafe(statement))
                .fetch_one(self.pool())
                .await?
                .try_get("n")?;
        }
        Ok(counts)
    }
}

/// Inside a concept's delete: every turn that used it goes, with its concept rows, and the
/// concept leaves every conversation's pseudonyms.
pub(super) async fn forget_concept(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    concept: &ConceptId,
) -> Result<(), RegistryError> {
    let used_in = "SELECT conversation_id, position FROM conversation_turn_concepts \
                   WHERE tenant = $1 AND concept_id = $2";
    for table in ["conversation_turns", "conversation_turn_concepts"] {
        // Row-value IN is in both SQLite (3.15+) and PostgreSQL.
        let statement = format!(
            "DELETE FROM {table} WHERE tenant = $1 AND (conversation_id, position) IN \
             (SELECT conversation_id, position FROM ({used_in}) AS used)"
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(tenant)
            .bind(concept.bare())
            .execute(&mut **transaction)
            .await?;
    }
    sqlx::query("DELETE FROM conversation_aliases WHERE tenant = $1 AND concept_id = $2")
        .bind(tenant)
        .bind(concept.bare())
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

async fn write_aliases(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    id: &str,
    aliases: &[ConceptId],
) -> Result<(), RegistryError> {
    sqlx::query("DELETE FROM conversation_aliases WHERE tenant = $1 AND conversation_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut **transaction)
        .await?;
    for (ordinal, concept) in aliases.iter().enumerate() {
        sqlx::query(
            "INSERT INTO conversation_aliases (tenant, conversation_id, ordinal, concept_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(id)
        .bind(ordinal as i64)
        .bind(concept.bare())
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, RegistryError> {
    serde_json::from_str(text).map_err(|error| RegistryError::Corrupt(error.to_string()))
}

fn turn_from_row(row: &AnyRow, concepts: Vec<String>) -> Result<ConversationTurn, RegistryError> {
    let optional_cues = |column: &str| -> Result<Option<CueSet>, RegistryError> {
        let text: Option<String> = row.try_get(column)?;
        text.as_deref().map(from_json).transpose()
    };
    let trace: String = row.try_get("trace")?;
    Ok(ConversationTurn {
        index: row.try_get::<i64, _>("position")? as u32,
        question: row.try_get("question")?,
        answer: row.try_get("answer")?,
        image_sha256: row.try_get("image_sha256")?,
        concepts,
        raw_cues: optional_cues("raw_cues")?,
        refined_cues: optional_cues("refined_cues")?,
        trace: from_json(&trace)?,
        created_at: row.try_get("created_at")?,
    })
}

fn stored_concept(row: &AnyRow) -> Result<ConceptId, RegistryError> {
    let raw: String = row.try_get("concept_id")?;
    ConceptId::parse(&raw).map_err(|error| RegistryError::Corrupt(error.to_string()))
}

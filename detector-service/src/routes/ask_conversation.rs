//! What `/v1/ask` does for a conversation: before the turn, its scope, pseudonyms and the
//! earlier turns as text for the cloud; after it, the stored turn.

use shared_types::limits::{MAX_HISTORY_TEXT_CHARS, MAX_HISTORY_TURNS};
use shared_types::{AskResponse, ConceptId, ConversationTurn, PriorTurn, TurnRef, TurnSummary};

use crate::error::ApiError;
use crate::pseudonyms::Pseudonyms;
use crate::registry::{ConceptRecord, NewTurn, ScopedRegistry};
use crate::state::AppState;

/// A conversation as a turn starts: read once, before any model work.
#[derive(Debug)]
pub struct ConversationContext {
    pub id: String,
    /// The concepts of the latest `SLC_CONVERSATION_SCOPE_TURNS` turns, newest first.
    pub scope: Vec<ConceptId>,
    /// Its pseudonyms so far: `aliases[k]` is `<c{k+1}>`.
    pub aliases: Vec<ConceptId>,
    /// The newest `MAX_HISTORY_TURNS` turns, oldest first.
    pub turns: Vec<ConversationTurn>,
}

/// Loads the conversation a request names; 404 when there is none.
pub async fn load(
    state: &AppState,
    registry: &ScopedRegistry,
    conversation_id: Option<&str>,
) -> Result<Option<ConversationContext>, ApiError> {
    let Some(id) = conversation_id else {
        return Ok(None);
    };
    if id.len() > 128 || registry.conversation_record(id).await?.is_none() {
        return Err(ApiError::unknown_conversation());
    }
    Ok(Some(ConversationContext {
        id: id.to_owned(),
        scope: registry
            .conversation_scope(id, state.limits.conversation_scope_turns)
            .await?,
        aliases: registry.conversation_aliases(id).await?,
        turns: registry
            .conversation_turns(id, Some(MAX_HISTORY_TURNS))
            .await?,
    }))
}

/// The turn's pseudonyms: the conversation's, extended by this turn's concepts.
pub fn pseudonyms(context: Option<&ConversationContext>, records: &[ConceptRecord]) -> Pseudonyms {
    let prior = context.map_or(&[][..], |context| context.aliases.as_slice());
    Pseudonyms::continuing(prior, records.iter().map(|record| &record.id))
}

/// The earlier turns as the cloud sees them: text only, each cut to the cap, ids hidden with
/// the conversation's pseudonyms. The reasoner applies its character budget to these.
pub fn history(context: Option<&ConversationContext>, names: &Pseudonyms) -> Vec<PriorTurn> {
    let Some(context) = context else {
        return Vec::new();
    };
    context
        .turns
        .iter()
        .map(|turn| PriorTurn {
            question: names.hide(cut(&turn.question)),
            answer: names.hide(cut(&turn.answer)),
        })
        .collect()
}

/// The first [`MAX_HISTORY_TEXT_CHARS`] characters of `text`.
fn cut(text: &str) -> &str {
    match text.char_indices().nth(MAX_HISTORY_TEXT_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Everything of a finished turn the conversation keeps.
pub struct FinishedTurn<'a> {
    pub question: &'a str,
    pub image_sha256: Option<String>,
    pub records: &'a [ConceptRecord],
    pub scenario: Option<String>,
    /// The pseudonyms used, when the turn had them.
    pub names: Option<&'a Pseudonyms>,
}

/// Stores the turn; `None` when the conversation was deleted while the turn ran (the answer
/// still goes back to the client).
pub async fn store(
    registry: &ScopedRegistry,
    context: &ConversationContext,
    finished: FinishedTurn<'_>,
    response: &AskResponse,
) -> Result<Option<TurnRef>, ApiError> {
    let reasoning = &response.reasoning;
    let turn = NewTurn {
        question: finished.question.to_owned(),
        answer: response.answer.clone(),
        image_sha256: finished.image_sha256,
        concepts: finished.records.iter().map(|r| r.id.clone()).collect(),
        raw_cues: response.raw_cues.clone(),
        refined_cues: reasoning.refined_cues.clone(),
        trace: TurnSummary {
            mode: response.mode,
            adapter: response
                .detection
                .as_ref()
                .and_then(|detection| detection.adapter.clone()),
            scenario: finished.scenario,
            actions: reasoning.actions.clone(),
            upstream_calls: reasoning.upstream.calls,
            prompt_tokens: reasoning.upstream.prompt_tokens,
            completion_tokens: reasoning.upstream.completion_tokens,
            history: reasoning.history.clone(),
            total_ms: response.timings.total_ms,
        },
        aliases: finished.names.map(Pseudonyms::aliased),
    };
    let stored = registry.append_turn(&context.id, &turn).await?;
    if stored.is_none() {
        tracing::info!(conversation = %context.id, "the conversation was deleted during the turn; not stored");
    }
    Ok(stored.map(|turn| TurnRef {
        id: context.id.clone(),
        turn,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_HISTORY_TEXT_CHARS + 5);
        assert_eq!(cut(&long).chars().count(), MAX_HISTORY_TEXT_CHARS);
        assert_eq!(cut("short"), "short");
    }
}

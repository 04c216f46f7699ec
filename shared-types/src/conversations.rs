//! Conversations on the edge: `/v1/conversations`, and what one stored turn keeps.
//!
//! A turn keeps text, cues and a summary of its trace; never the image, only its SHA-256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cues::{CueSet, Mode};
use crate::detect::AdapterChoice;
use crate::reason::{HistoryTrace, ReflectionAction};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    /// Chosen by the edge (`POST /v1/conversations`); pass it to `/v1/ask` as `conversation_id`.
    #[schema(example = "conv_3f2a9c0d4e5b46f7a8b9c0d1e2f3a4b5")]
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Oldest first.
    pub turns: Vec<ConversationTurn>,
}

/// One stored turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationTurn {
    /// 0 for the first turn.
    pub index: u32,
    pub question: String,
    pub answer: String,
    /// Hex SHA-256 of the turn's query image as the client sent it; the image is not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// The turn's concepts, bracketed, in the order the turn used them.
    pub concepts: Vec<String>,
    /// The small model's cue set; absent when detection did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub raw_cues: Option<CueSet>,
    /// The cue set after the large model's reflection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub refined_cues: Option<CueSet>,
    pub trace: TurnSummary,
    /// RFC 3339.
    pub created_at: String,
}

/// What a stored turn keeps of its trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TurnSummary {
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterChoice>,
    /// The scenario the turn's concepts came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Keyed by bracketed id.
    #[serde(default)]
    pub actions: BTreeMap<String, ReflectionAction>,
    pub upstream_calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The earlier turns the reasoner was given, and the budget they fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryTrace>,
    pub total_ms: f64,
}

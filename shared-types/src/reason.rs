//! The cloud reasoner's contract: `POST /v1/reason` and `POST /v1/identities`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cues::{ConceptDescription, CueSet, Identity, Mode};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// The query image as base64 or a `data:image/...;base64,` URL. Absent for text-only questions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub question: String,
    pub concepts: Vec<ConceptDescription>,
    /// The edge's cue set (Table 6). Absent when the mode skips detection or there is no image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub cues: Option<CueSet>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub options: ReasonOptions,
    /// Answer as server-sent events (`verification`, `delta`s, then `done` or `error`; see
    /// `shared_types::stream`), the large model called with `stream: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Earlier turns of the conversation, oldest first, text only (no field can carry an
    /// image): the answer call gets them as prior chat messages. At most
    /// `limits::MAX_HISTORY_TURNS`; the reasoner drops the oldest past its character budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PriorTurn>,
}

/// One earlier turn as the large model sees it: the user's question and the answer given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorTurn {
    pub question: String,
    pub answer: String,
}

/// How much of the conversation went to the answer call, and the budget it had to fit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryTrace {
    /// Characters of earlier questions and answers the reasoner allows per turn
    /// (`SLC_REASONER_HISTORY_BUDGET_CHARS`).
    pub budget_chars: u64,
    /// Earlier turns received from the edge.
    pub turns_received: u32,
    /// Earlier turns sent to the large model: the newest that fit the budget.
    pub turns_sent: u32,
    /// Oldest turns left out to fit the budget.
    pub turns_dropped: u32,
    /// Characters of the turns sent.
    pub chars_sent: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonOptions {
    /// Ask all of a turn's verification questions in one upstream call instead of one call
    /// per concept (the paper's default).
    #[serde(default)]
    pub batched_verification: bool,
    /// Upper bound on the answer's length, passed to the large model as `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_answer_tokens: Option<u32>,
    /// A second look at misses (beyond the paper): a concept the question names but the edge
    /// reported absent gets one yes/no question, "Do you see {category} in the image?"; a
    /// "yes" marks it present without a location (action `recovered`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recheck_mentioned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasonResponse {
    pub answer: String,
    pub mode: Mode,
    /// The cue set after reflection; equal to the input cues when reflection is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub refined_cues: Option<CueSet>,
    /// Keyed by bracketed id.
    pub identities: BTreeMap<String, Identity>,
    pub verifications: Vec<Verification>,
    /// What reflection did to each concept the edge reported, keyed by bracketed id.
    pub actions: BTreeMap<String, ReflectionAction>,
    pub upstream: UpstreamStats,
    pub timings: ReasonTimings,
    /// The conversation history given to the answer call; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryTrace>,
}

/// One yes/no verification question (Table 8) and what the large model said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    pub concept: String,
    pub about: VerifiedField,
    pub question: String,
    /// The model's raw text for this question.
    pub raw_answer: String,
    /// The strict parse: the first standalone yes/no; anything else counts as "no".
    pub answer: YesNo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VerifiedField {
    LocationAbsolute,
    LocationRelative,
    /// `recheck_mentioned`'s second look: whether the concept is in the image at all.
    Presence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    Yes,
    No,
}

/// The refinement rule's outcome for one concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReflectionAction {
    /// Every asked question came back "yes".
    Kept,
    /// One "no": the location-absolute was dropped.
    DroppedLocationAbsolute,
    /// One "no": the location-relative was dropped.
    DroppedLocationRelative,
    /// Two "no": the concept is reported absent.
    Suppressed,
    /// The edge reported it absent; nothing to verify.
    NotPresent,
    /// Reflection did not run (mode `no_reflection`).
    Unverified,
    /// Reported absent, named in the question, and the large model saw it on a second look
    /// (`recheck_mentioned`): present, without a location.
    Recovered,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamStats {
    /// Calls made to the large model, retries not counted.
    pub calls: u32,
    pub retries: u32,
    /// Concepts whose identity came from the cache: under the default `caller` scope, this caller's only.
    pub identity_cache_hits: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub model: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasonTimings {
    pub identity_ms: f64,
    pub verification_ms: f64,
    pub answer_ms: f64,
    pub total_ms: f64,
    /// Streamed turns: from the turn's start to the first answer text handed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitiesRequest {
    pub concepts: Vec<ConceptDescription>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdentitiesResponse {
    /// Keyed by bracketed id.
    pub identities: BTreeMap<String, Identity>,
    /// Bracketed ids whose identity the model's output could not give, so the authors'
    /// fallback (category "A character or object.", attributes = description) was used.
    pub fallbacks: Vec<String>,
    pub upstream: UpstreamStats,
}

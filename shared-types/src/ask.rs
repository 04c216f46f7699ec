//! The app's entry point on the edge: `POST /v1/ask`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cues::{CueSet, Mode};
use crate::detect::DetectResponse;
use crate::reason::ReasonResponse;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The query image as base64 or a data URL; absent for text-only questions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub question: String,
    /// Registered concept ids, bare (`bo`) or bracketed (`<bo>`); `[]` for none. When neither
    /// this nor `scenario` is given, the turn uses the `<id>`s the question mentions, the
    /// conversation's scope, and every registered concept when there are at most
    /// `SLC_MAX_CONCEPTS_PER_REQUEST` (otherwise a 400 asks to name them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concepts: Option<Vec<String>>,
    /// A scenario's members as the turn's concepts (added to `concepts` when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Continue this conversation (`POST /v1/conversations`): its earlier turns go to the
    /// large model as text, the concepts of its last turns stay in scope, and this turn is
    /// stored in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Replace ids with `<c1>`, `<c2>`, … in everything sent to the cloud, and map them back.
    #[serde(default)]
    pub pseudonymize: bool,
    /// Ask all verification questions in one upstream call.
    #[serde(default)]
    pub batched_verification: bool,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Longest answer in tokens (the large model's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_answer_tokens: Option<u32>,
    /// A second look at misses (beyond the paper): concepts the question names that the small
    /// model reported absent get one yes/no question to the large model (mode `full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recheck_mentioned: bool,
    /// Grounding boxes (beyond the paper): present concepts' cues get a `box` in the original
    /// image's pixels. Boxes stay on the edge: the cloud gets the Table 6 cues only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boxes: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AskResponse {
    pub answer: String,
    pub mode: Mode,
    /// The cue set as the small model gave it; absent when detection did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_cues: Option<CueSet>,
    /// The local detection in full (adapter, usage, timings); absent when it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectResponse>,
    /// The reasoner's trace: refined cues, identities, verifications, upstream calls, timings.
    pub reasoning: ReasonResponse,
    pub timings: AskTimings,
    /// Where the turn was stored, when it belongs to a conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<TurnRef>,
}

/// A stored turn's place: `GET /v1/conversations/{id}` lists it at `turn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TurnRef {
    pub id: String,
    pub turn: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AskTimings {
    pub detect_ms: f64,
    pub reason_ms: f64,
    /// Streamed turns: from the request to the first answer text sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    pub total_ms: f64,
}

/// The body of a failed `/v1/ask` (502/504 when the reasoner is unreachable or too slow):
/// the usual error, plus the local detection when it ran, so the app still has the cues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AskFailure {
    pub error: crate::error::ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectResponse>,
}

//! The server-sent events of a streamed turn, on both services.
//!
//! `POST /v1/reason` with `stream: true` sends `verification` (the refined cues, when the mode
//! has them), then `delta` events with the answer's text as the large model writes it, then
//! `done` (the whole `ReasonResponse`) or `error` (a [`StreamError`]). `POST /v1/ask` with
//! `stream: true` sends `detection` first and otherwise the same events, `done` carrying the
//! `AskResponse`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cues::CueSet;
use crate::error::ErrorDetail;

/// Event names, the one spelling both sides use.
pub const EVENT_DETECTION: &str = "detection";
pub const EVENT_VERIFICATION: &str = "verification";
pub const EVENT_DELTA: &str = "delta";
pub const EVENT_DONE: &str = "done";
pub const EVENT_ERROR: &str = "error";

/// A `delta` event: the next piece of the answer. The pieces joined are the answer before
/// `ReasonResponse::answer`'s trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AnswerDelta {
    pub text: String,
}

/// A `verification` event: the cue set after reflection, before the answer starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerificationEvent {
    #[schema(inline)]
    pub refined_cues: CueSet,
}

/// The reasoner's `error` event: the status the turn would have had without streaming (the
/// stream's own status, 200, was sent before the failure) and the usual error detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamError {
    pub status: u16,
    pub error: ErrorDetail,
}

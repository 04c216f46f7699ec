//! The edge's detection contract: `POST /v1/detect`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cues::CueSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectRequest {
    /// The query image as base64 or a `data:image/...;base64,` URL.
    pub image: String,
    /// Registered concept ids, bare (`bo`) or bracketed (`<bo>`). May be left out when
    /// `scenario` is given.
    #[serde(default)]
    pub concepts: Vec<String>,
    /// Grounding boxes (beyond the paper): each concept reported present also gets its
    /// `box` in the original image's pixels, one more small-model call per concept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boxes: bool,
    /// A scenario's members, added to `concepts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetectResponse {
    pub cues: CueSet,
    /// The Eq. 1 adapter of the turn's concepts together; absent with per-concept isolation,
    /// or when the base model detected.
    pub adapter: Option<AdapterChoice>,
    /// With per-concept isolation (`SLC_CONCEPT_ISOLATION=per-concept`), each concept's own
    /// Eq. 1 adapter by bracketed id (a concept missing here was detected by the base model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_adapters: Option<std::collections::BTreeMap<String, AdapterChoice>>,
    pub usage: Usage,
    pub timings: Timings,
}

/// The meta-concept adapter picked for a turn (paper Eq. 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdapterChoice {
    pub name: String,
    /// Cosine similarity between the turn's scenario embedding and the adapter's.
    pub similarity: f32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Forward passes run while decoding; fewer than `completion_tokens` when jump-forward
    /// fed grammar-forced runs of tokens in one step.
    pub decode_steps: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Timings {
    pub queue_ms: f64,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub total_ms: f64,
}

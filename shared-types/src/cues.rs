//! The cue set of the paper's Table 6: what the small model saw, per concept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One concept's cue. `present: false` carries no locations (Table 6: "omit all other keys").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cue {
    pub present: bool,
    #[serde(
        rename = "location-absolute",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(example = "top-left quadrant")]
    pub location_absolute: Option<String>,
    #[serde(
        rename = "location-relative",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(example = "to the left of the person in black suit")]
    pub location_relative: Option<String>,
    /// With `boxes: true` (beyond the paper): the concept's box `[x1, y1, x2, y2]` in the
    /// original image's pixels, from the small model's grounding. Never part of Table 6.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!([120, 80, 410, 360]))]
    pub bbox: Option<[u32; 4]>,
}

/// `{"<bo>": {present, location-absolute, location-relative}, ...}`, keyed by bracketed id.
pub type CueSet = BTreeMap<String, Cue>;

/// A concept's identity as the large model extracted it from its description (Table 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    #[schema(example = "a golden retriever puppy")]
    pub category: String,
    #[schema(example = "always playful expression")]
    pub attributes: String,
}

/// A concept as it crosses from edge to cloud: identifier and description, nothing else.
/// There is deliberately no field for reference images or embeddings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConceptDescription {
    /// Bracketed identifier, e.g. `<bo>`.
    #[schema(example = "<bo>")]
    pub id: String,
    #[schema(example = "<bo> is a cute golden retriever puppy with a playful expression.")]
    pub description: String,
}

/// The paper's ablations (Table 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Detection, reflection and answer: the full SLC pipeline.
    #[default]
    Full,
    /// Detection and answer; the cues are trusted as the small model gave them.
    NoReflection,
    /// No detection: identities and the question only.
    NoDetector,
    /// The large model alone, with the raw descriptions.
    Pure,
}

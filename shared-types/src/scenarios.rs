//! Scenarios: named groups of concepts (MC-LLaVA's multi-concept scenes), `/v1/scenarios`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/scenarios`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScenario {
    /// Follows the concept-id rule: 1–64 of `[A-Za-z0-9_-]`.
    #[schema(example = "family")]
    pub id: String,
    /// Registered concept ids, bare or bracketed; at least one, at most
    /// `SLC_MAX_CONCEPTS_PER_REQUEST`.
    #[schema(example = json!(["bo", "mam"]))]
    pub concepts: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// `PUT /v1/scenarios/{id}`: replaces the members and the description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScenario {
    pub concepts: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Scenario {
    pub id: String,
    pub description: String,
    /// Members, bare ids, in the order given.
    pub concepts: Vec<String>,
    /// Grows whenever the members (or a member's images) change; the edge's cached Eq. 1
    /// adapter choice is keyed by it.
    pub revision: u64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScenarioList {
    pub scenarios: Vec<Scenario>,
}

//! The edge's concept registry: `/v1/concepts`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/concepts` (JSON form; a multipart form carries the same fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConcept {
    /// 1–64 of `[A-Za-z0-9_-]`, without brackets; shown to models as `<id>`.
    #[schema(example = "bo")]
    pub id: String,
    #[schema(example = "<bo> is a cute golden retriever puppy with a playful expression.")]
    pub description: String,
    /// Reference images as base64 or data URLs. They never leave the edge.
    pub images: Vec<String>,
}

/// `PUT /v1/concepts/{id}`: replaces the description, and the images when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConcept {
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Concept {
    pub id: String,
    pub description: String,
    pub images: Vec<ConceptImage>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// The meta-adapter this concept alone maps to by Eq. 1 and its similarity; absent when
    /// the edge has no adapter bank or the concept was embedded by another CLIP model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<crate::detect::AdapterChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConceptImage {
    /// Position, for `GET /v1/concepts/{id}/images/{n}`.
    pub index: u32,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConceptList {
    pub concepts: Vec<Concept>,
}

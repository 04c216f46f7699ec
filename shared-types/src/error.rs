//! The one error body every SLC endpoint returns: `{"error": {"type", "message"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable kind, e.g. `invalid_image`, `unknown_concept`, `upstream_timeout`.
    #[serde(rename = "type")]
    #[schema(example = "unknown_concept")]
    pub kind: String,
    /// A sentence for people.
    #[schema(example = "unknown concept ids: <rex>")]
    pub message: String,
}

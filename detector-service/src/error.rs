//! The HTTP layer's one error enum and its single mapping to status + `{"error": {type, message}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared_types::{AskFailure, DetectResponse, ErrorBody, ErrorDetail};

use crate::registry::RegistryError;
use crate::workers::WorkerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed request: bad JSON, a bad field, an empty question, a bad identifier.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidImage(String),
    /// An image whose header announces more pixels than the cap (a decompression bomb).
    #[error("{0}")]
    ImageTooLarge(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many {what}: {count} given, at most {max} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("unknown concept ids: {}", .0.join(", "))]
    UnknownConcepts(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("unknown model {0:?}; see GET /v1/models")]
    UnknownModel(String),
    #[error("concept <{0}> already exists; use PUT /v1/concepts/{0} to change it")]
    ConceptExists(String),
    #[error("missing or invalid bearer API key")]
    Unauthorized,
    #[error("the model queue is full; retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error("the request deadline passed before the model finished")]
    DeadlineExceeded,
    #[error("the model is not ready: {0}")]
    ModelUnavailable(String),
    #[error("the model failed: {0}")]
    ModelFailed(String),
    /// The small model's output did not fit the cue-set schema (should never happen with
    /// constrained decoding; counted in `/metrics`).
    #[error("the model's output is not a valid cue set: {0}")]
    InvalidModelOutput(String),
    /// The reasoner could not be reached, answered an error, or took too long. The local
    /// detection, when it ran, still goes back to the client.
    #[error("{message}")]
    Upstream {
        timeout: bool,
        kind: &'static str,
        message: String,
        detection: Option<Box<DetectResponse>>,
    },
    #[error("database error: {0}")]
    Database(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::InvalidImage(_) | ApiError::TooMany { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ImageTooLarge(_) | ApiError::PayloadTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownConcepts(_) | ApiError::NotFound(_) | ApiError::UnknownModel(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::ConceptExists(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ModelUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Upstream { timeout: false, .. } => StatusCode::BAD_GATEWAY,
            ApiError::ModelFailed(_)
            | ApiError::InvalidModelOutput(_)
            | ApiError::Database(_)
            | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidImage(_) => "invalid_image",
            ApiError::ImageTooLarge(_) => "image_too_large",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooMany { what, .. } => match *what {
                "concepts" => "too_many_concepts",
                "images" => "too_many_images",
                _ => "too_many_items",
            },
            ApiError::UnknownConcepts(_) => "unknown_concept",
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownModel(_) => "model_not_found",
            ApiError::ConceptExists(_) => "concept_exists",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::ModelUnavailable(_) => "model_unavailable",
            ApiError::ModelFailed(_) => "model_error",
            ApiError::InvalidModelOutput(_) => "invalid_model_output",
            ApiError::Upstream { kind, .. } => kind,
            ApiError::Database(_) => "database_error",
            ApiError::Internal(_) => "internal_error",
        }
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            kind: self.kind().to_string(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, kind = self.kind(), "request failed");
        } else {
            tracing::debug!(error = %self, kind = self.kind(), "request refused");
        }
        let detail = self.detail();
        let retry_after = match &self {
            ApiError::Overloaded { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let mut response = match self {
            ApiError::Upstream { detection, .. } => (
                status,
                axum::Json(AskFailure {
                    error: detail,
                    detection: detection.map(|boxed| *boxed),
                }),
            )
                .into_response(),
            _ => (status, axum::Json(ErrorBody { error: detail })).into_response(),
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::AlreadyExists(id) => ApiError::ConceptExists(id),
            RegistryError::NotFound(id) => ApiError::UnknownConcepts(vec![format!("<{id}>")]),
            other => ApiError::Database(other.to_string()),
        }
    }
}

impl From<WorkerError> for ApiError {
    fn from(error: WorkerError) -> Self {
        match error {
            WorkerError::QueueFull { retry_after_secs } => {
                ApiError::Overloaded { retry_after_secs }
            }
            WorkerError::DeadlineExceeded => ApiError::DeadlineExceeded,
            WorkerError::NotReady(why) => ApiError::ModelUnavailable(why),
            WorkerError::ClientGone => ApiError::Internal("the client went away".into()),
            WorkerError::Model(why) => ApiError::ModelFailed(why),
            WorkerError::UnknownAdapter(name) => ApiError::UnknownModel(name),
            WorkerError::InvalidRequest(why) => ApiError::InvalidRequest(why),
        }
    }
}

//! The HTTP layer's one error enum and its single mapping to status + `{"error": {type, message}}`,
//! for plain responses and for the `error` event of a stream ([`ApiError::into_event`]).
//!
//! The status policy both services share: a body that does not parse (bad JSON syntax, a bad
//! multipart body, a path segment of the wrong type) 400; well-formed but invalid (a wrong
//! field type, an empty question, a bad id, an undecodable image) 422; over a limit 413, or 429
//! with `Retry-After` for a full queue; wrong method 405 with `Allow`; unknown route 404.
//!
//! Internal detail (the reasoner's URL and messages, sqlx's error text) never reaches a body:
//! the variants that carry it keep it in a `detail` field that only [`ApiError::log`] writes,
//! inside the request's span, and their client-facing messages are fixed sentences.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use shared_types::{AskFailure, ConceptId, DetectResponse, ErrorDetail, InvalidConceptId};

use crate::reasoner_client::ReasonerError;
use crate::registry::RegistryError;
use crate::workers::WorkerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or path does not parse: `kind` says which (`invalid_json`, …).
    #[error("{message}")]
    Malformed { kind: &'static str, message: String },
    /// Well-formed but invalid: a bad field, an empty question, bad sampling options.
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    InvalidConceptId(#[from] InvalidConceptId),
    #[error("{0}")]
    InvalidImage(String),
    /// An image whose header announces more pixels than the cap (a decompression bomb).
    #[error("{0}")]
    ImageTooLarge(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A text over its cap in `shared_types::limits` (`kind` names it).
    #[error("{message}")]
    TooLong { kind: &'static str, message: String },
    /// The registry is at a quota (`concept_quota_exceeded`, `storage_quota_exceeded`).
    #[error("{message}")]
    OverQuota { kind: &'static str, message: String },
    #[error("too many {what}: {count} given, at most {max} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("unknown concept ids: {}", join(.0))]
    UnknownConcepts(Vec<ConceptId>),
    #[error("{0}")]
    NotFound(String),
    /// An unknown scenario or conversation (`kind` says which).
    #[error("{message}")]
    Missing { kind: &'static str, message: String },
    /// A scenario id that is taken.
    #[error("{message}")]
    Conflict { kind: &'static str, message: String },
    /// Neither `concepts` nor `scenario`, and too many registered concepts to use them all.
    #[error("{0}")]
    ConceptsRequired(String),
    #[error("unknown model {0:?}; see GET /v1/models")]
    UnknownModel(String),
    #[error("concept {0} already exists; use PUT /v1/concepts/{bare} to change it", bare = .0.bare())]
    ConceptExists(ConceptId),
    #[error("missing or invalid bearer API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this tenant's request budget is spent; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("method not allowed on this route; see the Allow header")]
    MethodNotAllowed,
    #[error("the model queue is full; retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error("the request deadline passed before the model finished")]
    DeadlineExceeded,
    /// The models are loading, or their load failed. The field is the reason, for the log
    /// (and `/readyz`, the operator's view) only.
    #[error("the model is not ready; /readyz says why")]
    ModelUnavailable(String),
    /// A model job failed or panicked. The field is the engine's error, for the log only.
    #[error("the model failed on this request; the edge's log has the details")]
    ModelFailed(String),
    /// The small model's output did not fit the cue-set schema (should never happen with
    /// constrained decoding; counted in `/metrics`).
    #[error("the model's output is not a valid cue set; the edge's log has it")]
    InvalidModelOutput(String),
    /// The reasoner could not be reached, answered an error, or took too long. The local
    /// detection, when it ran, still goes back to the client. `message` is the fixed sentence
    /// of [`ReasonerError::client_message`]; `detail` the full error, for the log only.
    #[error("{message}")]
    Upstream {
        timeout: bool,
        kind: &'static str,
        message: String,
        detail: String,
        detection: Option<Box<DetectResponse>>,
    },
    /// The registry's database is busy, locked, full or unreachable: worth a retry (503).
    /// The field is the database's own error, for the log only.
    #[error(
        "the concept registry is unavailable; retry after {} s",
        DATABASE_RETRY_AFTER_SECS
    )]
    DatabaseUnavailable(String),
    /// Any other database failure. The field is the database's own error, for the log only.
    #[error("the concept registry failed; the edge's log has the details")]
    Database(String),
    /// The field is the cause, for the log only.
    #[error("internal error; the edge's log has the details")]
    Internal(String),
}

/// The `Retry-After` of a 503 `database_unavailable`: a lock or a reconnect rarely lasts longer.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 1;

fn join(ids: &[ConceptId]) -> String {
    let bracketed: Vec<String> = ids.iter().map(ConceptId::bracketed).collect();
    bracketed.join(", ")
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed { .. } | ApiError::ConceptsRequired(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_)
            | ApiError::InvalidConceptId(_)
            | ApiError::InvalidImage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ImageTooLarge(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::TooLong { .. }
            | ApiError::OverQuota { .. }
            | ApiError::TooMany { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownConcepts(_)
            | ApiError::NotFound(_)
            | ApiError::Missing { .. }
            | ApiError::UnknownModel(_) => StatusCode::NOT_FOUND,
            ApiError::ConceptExists(_) | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ModelUnavailable(_) | ApiError::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            ApiError::Malformed { kind, .. } => kind,
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidConceptId(_) => "invalid_concept_id",
            ApiError::InvalidImage(_) => "invalid_image",
            ApiError::ImageTooLarge(_) => "image_too_large",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooLong { kind, .. } | ApiError::OverQuota { kind, .. } => kind,
            ApiError::TooMany { what, .. } => match *what {
                "concepts" => "too_many_concepts",
                "images" => "too_many_images",
                _ => "too_many_items",
            },
            ApiError::UnknownConcepts(_) => "unknown_concept",
            ApiError::NotFound(_) => "not_found",
            ApiError::Missing { kind, .. } | ApiError::Conflict { kind, .. } => kind,
            ApiError::ConceptsRequired(_) => "concepts_required",
            ApiError::UnknownModel(_) => "model_not_found",
            ApiError::ConceptExists(_) => "concept_exists",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::ModelUnavailable(_) => "model_unavailable",
            ApiError::ModelFailed(_) => "model_error",
            ApiError::InvalidModelOutput(_) => "invalid_model_output",
            ApiError::Upstream { kind, .. } => kind,
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::Database(_) => "database_error",
            ApiError::Internal(_) => "internal_error",
        }
    }

    pub fn unknown_scenario(id: &ConceptId) -> Self {
        ApiError::Missing {
            kind: "unknown_scenario",
            message: format!(
                "scenario {} is not registered; see GET /v1/scenarios",
                id.bare()
            ),
        }
    }

    pub fn unknown_conversation() -> Self {
        ApiError::Missing {
            kind: "unknown_conversation",
            message: "no such conversation; create one with POST /v1/conversations".into(),
        }
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            kind: self.kind().to_string(),
            message: self.to_string(),
        }
    }

    /// A failed call to the reasoner, with the local detection when it ran.
    pub fn upstream(error: ReasonerError, detection: Option<DetectResponse>) -> Self {
        let (timeout, kind) = match &error {
            ReasonerError::Timeout(_) => (true, "upstream_timeout"),
            ReasonerError::Unreachable { .. } => (false, "upstream_unreachable"),
            ReasonerError::Upstream { .. } => (false, "upstream_error"),
            ReasonerError::InvalidResponse(_) => (false, "upstream_invalid_response"),
        };
        ApiError::Upstream {
            timeout,
            kind,
            message: error.client_message(),
            detail: error.to_string(),
            detection: detection.map(Box::new),
        }
    }

    /// The body: an [`AskFailure`] (the local detection kept) for a failed reasoner call, an
    /// `ErrorBody` otherwise: `detection` is left out when absent, so the two read the same.
    fn into_body(self) -> AskFailure {
        self.log();
        let error = self.detail();
        let detection = match self {
            ApiError::Upstream { detection, .. } => detection.map(|boxed| *boxed),
            _ => None,
        };
        AskFailure { error, detection }
    }

    /// The `error` event that ends a server-sent stream, with the same body as a response.
    pub fn into_event(self) -> Event {
        let body = self.into_body();
        Event::default()
            .event("error")
            .json_data(&body)
            .unwrap_or_else(|_| Event::default().event("error"))
    }

    /// [`ApiError::TooLong`] when `text` is over `max` characters.
    pub fn check_length(
        kind: &'static str,
        what: &str,
        text: &str,
        max: usize,
    ) -> Result<(), ApiError> {
        shared_types::limits::check_chars(what, text, max)
            .map_err(|message| ApiError::TooLong { kind, message })
    }

    /// What the log gets besides the client's message: the internal detail of the variants
    /// that keep one.
    fn internal_detail(&self) -> Option<&str> {
        match self {
            ApiError::Upstream { detail, .. } => Some(detail),
            ApiError::DatabaseUnavailable(detail)
            | ApiError::Database(detail)
            | ApiError::ModelUnavailable(detail)
            | ApiError::ModelFailed(detail)
            | ApiError::InvalidModelOutput(detail)
            | ApiError::Internal(detail) => Some(detail),
            _ => None,
        }
    }

    fn log(&self) {
        if let Some(detail) = self.internal_detail() {
            tracing::error!(error = %self, detail, kind = self.kind(), "request failed");
        } else if self.status().is_server_error() {
            tracing::error!(error = %self, kind = self.kind(), "request failed");
        } else {
            tracing::debug!(error = %self, kind = self.kind(), "request refused");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::Overloaded { retry_after_secs }
            | ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::DatabaseUnavailable(_) => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        };
        let unauthorized = matches!(self, ApiError::Unauthorized);
        let mut response = (status, axum::Json(self.into_body())).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::AlreadyExists(id) => ApiError::ConceptExists(id),
            RegistryError::NotFound(id) => ApiError::UnknownConcepts(vec![id]),
            RegistryError::ScenarioExists(id) => ApiError::Conflict {
                kind: "scenario_exists",
                message: format!(
                    "scenario {} already exists; use PUT /v1/scenarios/{} to change it",
                    id.bare(),
                    id.bare()
                ),
            },
            RegistryError::ScenarioNotFound(id) => ApiError::unknown_scenario(&id),
            other if other.is_unavailable() => ApiError::DatabaseUnavailable(other.to_string()),
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

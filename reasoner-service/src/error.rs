//! The service's one error enum and its one mapping to HTTP: a status and the shared body
//! `{"error": {"type", "message"}}`. Client mistakes are 4xx; the large model's failures are
//! 502 (it answered badly or not at all) or 504 (it was too slow).
//!
//! The status policy both services share: malformed JSON 400; a JSON body of the wrong shape,
//! or well-formed but invalid, 422; not `application/json` 415; over a size or count limit
//! 413; over the concurrency limit 429 with `Retry-After`; wrong method 405 with `Allow`;
//! unknown route 404; missing or wrong key 401. Every error body has the shape above.
//!
//! A body's message never carries internal text: the large model's error messages and sqlx's
//! errors go to the log (inside the request's span), the client gets a fixed sentence
//! ([`ReasonerError::client_message`]).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use shared_types::{ErrorBody, ErrorDetail};

use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ReasonerError {
    /// The request parsed but says something impossible (empty question, unknown cue id…).
    #[error("{message}")]
    Invalid { kind: &'static str, message: String },
    /// The request is over a count limit (too many concepts…); 413 like an oversize body.
    #[error("{message}")]
    TooLarge { kind: &'static str, message: String },
    /// The body is not the JSON it should be, or not JSON at all.
    #[error("{message}")]
    BadBody {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("the server is at its limit of {limit} concurrent turns; retry shortly")]
    TooManyTurns { limit: usize },
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the identity cache is unavailable: {0}")]
    Cache(#[from] sqlx::Error),
}

impl ReasonerError {
    pub fn invalid(kind: &'static str, message: impl Into<String>) -> Self {
        ReasonerError::Invalid {
            kind,
            message: message.into(),
        }
    }

    pub fn too_large(kind: &'static str, message: impl Into<String>) -> Self {
        ReasonerError::TooLarge {
            kind,
            message: message.into(),
        }
    }

    /// The body's message: [`UpstreamError::client_message`] for the large model's failures,
    /// a fixed sentence for the cache, and the `Display` (which holds no internal text) for the
    /// rest.
    pub fn client_message(&self) -> String {
        match self {
            ReasonerError::Upstream(error) => error.client_message(),
            ReasonerError::Cache(_) => "the identity cache is unavailable".to_string(),
            _ => self.to_string(),
        }
    }

    pub fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            ReasonerError::Invalid { kind, .. } => (StatusCode::UNPROCESSABLE_ENTITY, kind),
            ReasonerError::TooLarge { kind, .. } => (StatusCode::PAYLOAD_TOO_LARGE, kind),
            ReasonerError::BadBody { status, kind, .. } => (*status, kind),
            ReasonerError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ReasonerError::TooManyTurns { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_turns"),
            ReasonerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ReasonerError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ReasonerError::Upstream(error) => match error {
                UpstreamError::Rejected { .. } => (StatusCode::BAD_GATEWAY, "upstream_rejected"),
                UpstreamError::Unavailable { .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream_unavailable")
                }
                UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                UpstreamError::DeadlineExceeded { .. } => {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream_deadline_exceeded")
                }
                UpstreamError::Unreachable { .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream_unreachable")
                }
                UpstreamError::BadResponse { .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream_bad_response")
                }
                UpstreamError::Stalled { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_stalled"),
                UpstreamError::Interrupted { .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream_interrupted")
                }
            },
            ReasonerError::Cache(_) => (StatusCode::SERVICE_UNAVAILABLE, "cache_unavailable"),
        }
    }
}

impl ReasonerError {
    /// The `error` event of a streamed turn: what the response would have been, as data.
    pub fn into_stream_error(self) -> shared_types::StreamError {
        let (status, kind) = self.status_and_kind();
        if status.is_server_error() {
            tracing::error!(error = %self, kind, "streamed turn failed");
        }
        shared_types::StreamError {
            status: status.as_u16(),
            error: ErrorDetail {
                kind: kind.to_owned(),
                message: self.client_message(),
            },
        }
    }
}

impl IntoResponse for ReasonerError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        if status.is_server_error() {
            tracing::error!(error = %self, kind, "turn failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                kind: kind.to_owned(),
                message: self.client_message(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ReasonerError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ReasonerError::TooManyTurns { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ReasonerError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let kind = match &rejection {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::JsonDataError(_) => "invalid_request",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_body",
        };
        ReasonerError::BadBody {
            status,
            kind,
            message: rejection.body_text(),
        }
    }
}

/// `Json<T>` whose rejections are this service's typed errors instead of axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ReasonerError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

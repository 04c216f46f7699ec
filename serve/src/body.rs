//! Reading a request body whole, under a size limit and one deadline.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use shared_types::{ErrorBody, ErrorDetail};

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The longest a client may take to send the whole body.
    pub deadline: Duration,
}

/// Axum middleware (`from_fn_with_state(limits, read_body)`): the request goes on with its body
/// in memory, or the client gets 413 `payload_too_large` or 408 `request_timeout` as JSON.
pub async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.deadline, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) => {
            // Over the limit, or the connection broke half-way.
            return if error.downcast_ref::<LengthLimitError>().is_some() {
                refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body exceeds {} bytes", limits.max_bytes),
                )
            } else {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("the request body could not be read: {error}"),
                )
            };
        }
        Err(_) => {
            tracing::debug!(deadline = ?limits.deadline, "a client was too slow sending its body");
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {:?}",
                    limits.deadline
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn refuse(status: StatusCode, kind: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            kind: kind.to_owned(),
            message,
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status != StatusCode::BAD_REQUEST {
        // The body was not read to its end: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(axum::http::header::CONNECTION, "close".parse().unwrap());
    }
    response
}

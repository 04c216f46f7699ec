//! The edge's client of the cloud reasoner's `POST /v1/reason`.
//!
//! A [`ReasonerError`]'s `Display` is the internal detail (the reasoner's URL, the transport
//! error, the reasoner's own message) for the edge's log; [`ReasonerError::client_message`] is
//! the fixed sentence a client sees, so none of that detail reaches a response body.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shared_types::{
    AnswerDelta, CACHE_PARTITION_HEADER, CueSet, DEADLINE_MS_HEADER, EVENT_DELTA, EVENT_DONE,
    EVENT_ERROR, EVENT_VERIFICATION, ErrorBody, REQUEST_ID_HEADER, ReasonRequest, ReasonResponse,
    StreamError, VerificationEvent,
};
use slc_serve::sse::{SseEvent, SseParser};

#[derive(Debug, thiserror::Error)]
pub enum ReasonerError {
    #[error("the reasoner did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the reasoner at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// `kind` is the `type` of the reasoner's error body, when it sent one.
    #[error("the reasoner answered {status} ({}): {message}", kind.as_deref().unwrap_or("no error body"))]
    Upstream {
        status: u16,
        kind: Option<String>,
        message: String,
    },
    #[error("the reasoner's response is not a ReasonResponse: {0}")]
    InvalidResponse(String),
}

impl ReasonerError {
    /// The client-facing sentence: the failure's kind, the reasoner's status and its error
    /// `type` (when it is a plain identifier), never its URL or its message text.
    pub fn client_message(&self) -> String {
        match self {
            ReasonerError::Timeout(timeout) => {
                format!("the reasoner did not answer within {timeout:?}")
            }
            ReasonerError::Unreachable { .. } => "the reasoner is unreachable".to_string(),
            ReasonerError::Upstream { status, kind, .. } => match kind {
                Some(kind) if is_error_type(kind) => {
                    format!("the reasoner failed (HTTP {status}, {kind})")
                }
                _ => format!("the reasoner failed (HTTP {status})"),
            },
            ReasonerError::InvalidResponse(_) => {
                "the reasoner's response is not a valid ReasonResponse".to_string()
            }
        }
    }
}

/// Longest event accepted from the reasoner's stream (a `done` event carries the whole trace).
const MAX_EVENT_BYTES: usize = 8 << 20;

/// What a streamed turn hands on before its response.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamedPiece {
    Verification(CueSet),
    Delta(String),
}

enum StreamItem {
    Piece(StreamedPiece),
    Done(Box<ReasonResponse>),
}

fn invalid(event: &str, error: serde_json::Error) -> ReasonerError {
    ReasonerError::InvalidResponse(format!("the reasoner's {event} event: {error}"))
}

/// One event of the reasoner's stream; its `error` event is the error it describes.
fn stream_event(event: SseEvent) -> Result<StreamItem, ReasonerError> {
    let name = event.event.as_deref().unwrap_or("message");
    match name {
        EVENT_VERIFICATION => serde_json::from_str::<VerificationEvent>(&event.data)
            .map(|event| StreamItem::Piece(StreamedPiece::Verification(event.refined_cues)))
            .map_err(|error| invalid(name, error)),
        EVENT_DELTA => serde_json::from_str::<AnswerDelta>(&event.data)
            .map(|delta| StreamItem::Piece(StreamedPiece::Delta(delta.text)))
            .map_err(|error| invalid(name, error)),
        EVENT_DONE => serde_json::from_str::<ReasonResponse>(&event.data)
            .map(|response| StreamItem::Done(Box::new(response)))
            .map_err(|error| invalid(name, error)),
        EVENT_ERROR => {
            let failure: StreamError =
                serde_json::from_str(&event.data).map_err(|error| invalid(name, error))?;
            Err(ReasonerError::Upstream {
                status: failure.status,
                kind: Some(failure.error.kind),
                message: failure.error.message,
            })
        }
        other => Err(ReasonerError::InvalidResponse(format!(
            "the reasoner sent an unknown event {:?}",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// A non-2xx answer: its status and, when it sent one, its error body's type and message.
fn upstream_error(status: u16, bytes: &[u8]) -> ReasonerError {
    let (kind, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => (Some(body.error.kind), body.error.message),
        Err(_) => (
            None,
            String::from_utf8_lossy(bytes).chars().take(500).collect(),
        ),
    };
    ReasonerError::Upstream {
        status,
        kind,
        message,
    }
}

/// An error `type` as both services write them (`upstream_unavailable`): safe to repeat.
fn is_error_type(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_' || byte.is_ascii_digit())
}

#[derive(Debug, Clone)]
pub struct ReasonerClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
}

/// What goes with a turn besides its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTags<'a> {
    /// The request id (`shared_types::REQUEST_ID_HEADER`) to log the turn under.
    pub request_id: Option<&'a str>,
    /// The tenant's opaque identity-cache partition (`shared_types::CACHE_PARTITION_HEADER`),
    /// the only trace of the tenant the cloud gets.
    pub cache_partition: Option<&'a str>,
}

impl ReasonerClient {
    pub fn new(base_url: &str, api_key: Option<String>, timeout: Duration) -> Self {
        // reqwest is built without a bundled crypto provider; install ring's once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .build()
            .expect("building the reasoner HTTP client");
        ReasonerClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            timeout,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/v1/reason", self.base_url)
    }

    /// Sends one turn and returns the reasoner's answer with the wall time it took.
    pub async fn reason(
        &self,
        request: &ReasonRequest,
        tags: CallTags<'_>,
    ) -> Result<(ReasonResponse, f64), ReasonerError> {
        let started = Instant::now();
        let bytes = self
            .open(request, tags)
            .await?
            .bytes()
            .await
            .map_err(|error| self.classify(error))?;
        let parsed = serde_json::from_slice::<ReasonResponse>(&bytes)
            .map_err(|error| ReasonerError::InvalidResponse(error.to_string()))?;
        Ok((parsed, started.elapsed().as_secs_f64() * 1000.0))
    }

    /// One turn as the reasoner's event stream (`request.stream` must be set): `on_event` gets
    /// the refined cues and the answer's pieces as they come; the result is the `done` event's
    /// response. The client's timeout bounds the whole stream.
    pub async fn reason_stream<F, Fut>(
        &self,
        request: &ReasonRequest,
        tags: CallTags<'_>,
        mut on_event: F,
    ) -> Result<(ReasonResponse, f64), ReasonerError>
    where
        F: FnMut(StreamedPiece) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let started = Instant::now();
        let mut body = self.open(request, tags).await?.bytes_stream();
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| self.classify(error))?;
            let events = parser
                .push(&chunk)
                .map_err(|error| ReasonerError::InvalidResponse(error.to_string()))?;
            for event in events {
                match stream_event(event)? {
                    StreamItem::Piece(piece) => on_event(piece).await,
                    StreamItem::Done(response) => {
                        return Ok((*response, started.elapsed().as_secs_f64() * 1000.0));
                    }
                }
            }
        }
        Err(ReasonerError::InvalidResponse(
            "the reasoner's stream ended without a done or error event".into(),
        ))
    }

    /// Sends the request; a non-success status becomes the reasoner's typed error (its body
    /// read for the error's type), a success is handed back unread.
    async fn open(
        &self,
        request: &ReasonRequest,
        tags: CallTags<'_>,
    ) -> Result<reqwest::Response, ReasonerError> {
        let response = self
            .post(request, tags)
            .send()
            .await
            .map_err(|error| self.classify(error))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(upstream_error(status.as_u16(), &bytes));
        }
        Ok(response)
    }

    fn post(&self, request: &ReasonRequest, tags: CallTags<'_>) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .post(self.url())
            .timeout(self.timeout)
            .json(request);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        if let Some(id) = tags.request_id {
            builder = builder.header(REQUEST_ID_HEADER, id);
        }
        if let Some(partition) = tags.cache_partition {
            builder = builder.header(CACHE_PARTITION_HEADER, partition);
        }
        // The reasoner stops working on the turn when this edge stops waiting for it; a little
        // earlier, so its 504 arrives rather than this edge's own timeout.
        let deadline_ms = self.timeout.as_millis().saturating_sub(250).max(1);
        builder.header(DEADLINE_MS_HEADER, deadline_ms.to_string())
    }

    fn classify(&self, error: reqwest::Error) -> ReasonerError {
        if error.is_timeout() {
            ReasonerError::Timeout(self.timeout)
        } else {
            ReasonerError::Unreachable {
                url: self.url(),
                reason: error.to_string(),
            }
        }
    }
}

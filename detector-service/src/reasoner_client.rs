//! The edge's client of the cloud reasoner's `POST /v1/reason`.
//!
//! A [`ReasonerError`]'s `Display` is the internal detail (the reasoner's URL, the transport
//! error, the reasoner's own message) for the edge's log; [`ReasonerError::client_message`] is
//! the fixed sentence a client sees, so none of that detail reaches a response body.

use std::time::{Duration, Instant};

use shared_types::{
    CACHE_PARTITION_HEADER, DEADLINE_MS_HEADER, ErrorBody, REQUEST_ID_HEADER, ReasonRequest,
    ReasonResponse,
};

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
    /// `cache_partition` is the tenant's opaque identity-cache partition
    /// (`shared_types::CACHE_PARTITION_HEADER`), the only trace of the tenant the cloud gets.
    pub async fn reason(
        &self,
        request: &ReasonRequest,
        request_id: Option<&str>,
        cache_partition: Option<&str>,
    ) -> Result<(ReasonResponse, f64), ReasonerError> {
        let started = Instant::now();
        let mut builder = self
            .http
            .post(self.url())
            .timeout(self.timeout)
            .json(request);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        if let Some(id) = request_id {
            builder = builder.header(REQUEST_ID_HEADER, id);
        }
        if let Some(partition) = cache_partition {
            builder = builder.header(CACHE_PARTITION_HEADER, partition);
        }
        // The reasoner stops working on the turn when this edge stops waiting for it; a little
        // earlier, so its 504 arrives rather than this edge's own timeout.
        let deadline_ms = self.timeout.as_millis().saturating_sub(250).max(1);
        builder = builder.header(DEADLINE_MS_HEADER, deadline_ms.to_string());
        let response = builder.send().await.map_err(|error| self.classify(error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.classify(error))?;
        if !status.is_success() {
            let (kind, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (Some(body.error.kind), body.error.message),
                Err(_) => (
                    None,
                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                ),
            };
            return Err(ReasonerError::Upstream {
                status: status.as_u16(),
                kind,
                message,
            });
        }
        let parsed = serde_json::from_slice::<ReasonResponse>(&bytes)
            .map_err(|error| ReasonerError::InvalidResponse(error.to_string()))?;
        Ok((parsed, started.elapsed().as_secs_f64() * 1000.0))
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

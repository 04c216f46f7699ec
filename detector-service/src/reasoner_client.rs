//! The edge's client of the cloud reasoner's `POST /v1/reason`.

use std::time::{Duration, Instant};

use shared_types::{ErrorBody, REQUEST_ID_HEADER, ReasonRequest, ReasonResponse};

#[derive(Debug, thiserror::Error)]
pub enum ReasonerError {
    #[error("the reasoner did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the reasoner at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the reasoner answered {status}: {message}")]
    Upstream { status: u16, message: String },
    #[error("the reasoner's response is not a ReasonResponse: {0}")]
    InvalidResponse(String),
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
    pub async fn reason(
        &self,
        request: &ReasonRequest,
        request_id: Option<&str>,
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
        let response = builder.send().await.map_err(|error| self.classify(error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.classify(error))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|body| format!("{}: {}", body.error.kind, body.error.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            return Err(ReasonerError::Upstream {
                status: status.as_u16(),
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

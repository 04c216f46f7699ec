//! The large model behind the OpenAI chat-completions protocol: GPT-4o, a vLLM server, or the
//! edge's own `/v1/chat/completions`.
//!
//! One logical call may take several attempts: 429, 5xx, timeouts and transport failures are
//! retried with exponential backoff and jitter (via `backon`), a `Retry-After` (seconds or an
//! HTTP-date) replaces the backoff delay, and the whole call runs under an overall deadline. Any
//! other 4xx is the caller's fault and is not retried.
//!
//! - [`wire`]: the request and reply as JSON;
//! - [`body`]: the zero-copy request body;
//! - [`retry`]: the policy, the backoff and `Retry-After`;
//! - [`classify`]: attempt errors, the retry decision and the call's final error;
//! - [`outcome`]: metrics and audit for every call, in one place;
//! - [`stream`]: the streamed answer call, read as server-sent events.

mod body;
mod classify;
mod outcome;
mod retry;
mod stream;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use axum::http::HeaderValue;
use backon::Retryable;
use serde_json::Value;
use shared_types::REQUEST_ID_HEADER;

pub use body::RequestBody;
pub use classify::UpstreamError;
pub use retry::{RetryPolicy, parse_retry_after, parse_retry_after_at};

use crate::audit::AuditLog;
use crate::image::DataUri;
use crate::metrics::Metrics;
use classify::AttemptError;
use outcome::{FinishedCall, Recorder};

/// Which step of the turn a call belongs to; a metrics label and an audit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Identity,
    Verify,
    Answer,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Identity => "identity",
            CallKind::Verify => "verify",
            CallKind::Answer => "answer",
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Up to and including `/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Send `response_format: json_schema` on the identity call (OpenAI and vLLM accept it).
    pub json_schema: bool,
    /// Send a yes/no `response_format` on verification calls.
    pub verify_json_schema: bool,
    /// HTTP/1.1 only, no HTTP/2 over TLS (see `ServeConfig::llm_http1_only`).
    pub http1_only: bool,
    pub retry: RetryPolicy,
}

/// One chat-completions request, before it is put on the wire. The turn builds them with
/// the constructors of its call kinds (`turn::calls`).
#[derive(Debug, Clone)]
pub struct ChatCall {
    pub kind: CallKind,
    pub system: Option<String>,
    pub user_text: String,
    /// The query image as a `data:` URI, shared between the turn's calls without copying.
    pub image: Option<DataUri>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub response_format: Option<Value>,
    /// Earlier turns of a conversation, oldest first, sent as user/assistant messages between
    /// the system prompt and this call's user message. Text only: no image goes with them.
    pub history: Vec<shared_types::PriorTurn>,
}

/// What came back from one logical call.
#[derive(Debug, Clone, Default)]
pub struct ChatReply {
    pub content: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub retries: u32,
}

pub struct UpstreamClient {
    http: reqwest::Client,
    /// Parsed once: reqwest would parse a string URL again on every attempt.
    endpoint: reqwest::Url,
    settings: UpstreamSettings,
    recorder: Recorder,
}

impl UpstreamClient {
    pub fn new(
        settings: UpstreamSettings,
        metrics: Metrics,
        audit: Option<Arc<AuditLog>>,
    ) -> anyhow::Result<Self> {
        // reqwest is built without a bundled crypto provider; ring is ours. A second install
        // (another server in the same process) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            .timeout(settings.retry.attempt_timeout)
            .pool_max_idle_per_host(1024);
        if settings.http1_only {
            http = http.http1_only();
        }
        let http = http.build()?;
        let endpoint = format!(
            "{}/chat/completions",
            settings.base_url.trim_end_matches('/')
        );
        let endpoint = reqwest::Url::parse(&endpoint).map_err(|error| {
            anyhow::anyhow!("the large model's base URL {endpoint:?} is not a URL: {error}")
        })?;
        Ok(Self {
            http,
            endpoint,
            settings,
            recorder: Recorder::new(metrics, audit),
        })
    }

    pub fn model(&self) -> &str {
        &self.settings.model
    }

    pub fn json_schema_enabled(&self) -> bool {
        self.settings.json_schema
    }

    pub fn verify_json_schema_enabled(&self) -> bool {
        self.settings.verify_json_schema
    }

    /// The wire body of a call: the system prompt, then the user turn with the image (as a
    /// data URI, not copied) before the text.
    pub fn request_body(&self, call: &ChatCall) -> RequestBody {
        wire::encode(&self.settings.model, call, false)
    }

    /// One logical call with retries, backoff and the overall deadline. `request_id` (the
    /// turn's request id) goes on every attempt, so upstream logs join the edge's.
    pub async fn chat(
        &self,
        call: &ChatCall,
        request_id: Option<&HeaderValue>,
    ) -> Result<ChatReply, UpstreamError> {
        let started = Instant::now();
        // Shared, not copied, by every attempt.
        let encoded = self.request_body(call);
        let attempts = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let policy = &self.settings.retry;
        let attempt = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(&encoded, request_id)
        };
        let retrying = self.retried(call.kind, attempt, &retries);
        let attempts_made = || attempts.load(Ordering::Relaxed);
        let result = match tokio::time::timeout(policy.call_deadline, retrying).await {
            Err(_) => Err(UpstreamError::DeadlineExceeded {
                deadline_ms: policy.call_deadline.as_millis() as u64,
            }),
            Ok(Ok(mut reply)) => {
                reply.retries = retries.load(Ordering::Relaxed);
                Ok(reply)
            }
            Ok(Err(error)) => Err(error.into_final(attempts_made(), policy.attempt_timeout)),
        };
        self.recorder.finish(&FinishedCall {
            kind: call.kind,
            model: &self.settings.model,
            request_bytes: encoded.len(),
            image_bytes: call.image.as_ref().map_or(0, |image| image.len()),
            attempts: attempts_made(),
            elapsed: started.elapsed(),
            result: &result,
        });
        result
    }

    /// `attempt` with the policy's backoff, `Retry-After` and retry counting (in `retries`).
    async fn retried<T, Fut>(
        &self,
        kind: CallKind,
        attempt: impl FnMut() -> Fut,
        retries: &AtomicU32,
    ) -> Result<T, AttemptError>
    where
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        let policy = &self.settings.retry;
        attempt
            .retry(policy.backoff())
            .sleep(tokio::time::sleep)
            .when(AttemptError::is_retryable)
            // Retry-After replaces the backoff delay, but only while the budget lasts: `None`
            // from the backoff means the retries are spent.
            .adjust(|error, delay| {
                delay.map(|delay| retry::retry_delay(error, delay, policy.max_retry_after))
            })
            .notify(|error, delay| {
                retries.fetch_add(1, Ordering::Relaxed);
                self.recorder.retry(kind, error, delay);
            })
            .await
    }

    /// The POST of one attempt: body, request id and key.
    fn authorized_post(
        &self,
        encoded: &RequestBody,
        request_id: Option<&HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap(encoded.clone()));
        if let Some(request_id) = request_id {
            request = request.header(REQUEST_ID_HEADER, request_id.clone());
        }
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        request
    }

    async fn attempt(
        &self,
        encoded: &RequestBody,
        request_id: Option<&HeaderValue>,
    ) -> Result<ChatReply, AttemptError> {
        let response = self
            .authorized_post(encoded, request_id)
            .send()
            .await
            .map_err(AttemptError::from_transport)?;
        if !response.status().is_success() {
            return Err(AttemptError::from_status(response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(AttemptError::from_transport)?;
        wire::decode(&bytes)
    }
}

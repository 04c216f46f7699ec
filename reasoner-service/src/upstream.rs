//! The large model behind the OpenAI chat-completions protocol: GPT-4o, a vLLM server, or the
//! edge's own `/v1/chat/completions`.
//!
//! One logical call may take several attempts: 429, 5xx, timeouts and transport failures are
//! retried with exponential backoff and jitter (via `backon`), a `Retry-After` (seconds or an
//! HTTP-date) replaces the backoff delay, and the whole call runs under an overall deadline. Any other
//! 4xx is the caller's fault and is not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderValue;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditLog, AuditRecord};
use crate::http::REQUEST_ID_HEADER;
use crate::image::DataUri;
use crate::metrics::Metrics;

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

/// Retry and timeout settings for every call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Limit of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Limit of one logical call, retries and backoff included.
    pub call_deadline: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
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

/// One chat-completions request, before it is put on the wire.
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
}

/// What came back from one logical call.
#[derive(Debug, Clone, Default)]
pub struct ChatReply {
    pub content: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub retries: u32,
}

/// Why a logical call failed, after its retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the large model refused the request with {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("the large model answered {status} on all {attempts} attempts: {message}")]
    Unavailable {
        status: u16,
        attempts: u32,
        message: String,
    },
    #[error("the large model did not answer within {timeout_ms} ms on all {attempts} attempts")]
    Timeout { timeout_ms: u64, attempts: u32 },
    #[error("the large model call did not finish within its {deadline_ms} ms deadline")]
    DeadlineExceeded { deadline_ms: u64 },
    #[error("the large model could not be reached after {attempts} attempts: {message}")]
    Unreachable { attempts: u32, message: String },
    #[error("the large model's response could not be read: {message}")]
    BadResponse { message: String },
}

impl UpstreamError {
    fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::DeadlineExceeded { .. } => "deadline",
            UpstreamError::Unreachable { .. } => "unreachable",
            UpstreamError::BadResponse { .. } => "bad_response",
        }
    }
}

/// One failed HTTP attempt, before the retry decision.
#[derive(Debug)]
enum AttemptError {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    Timeout,
    Transport(String),
    BadBody(String),
}

impl AttemptError {
    fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => *status == 429 || *status >= 500,
            AttemptError::Timeout | AttemptError::Transport(_) => true,
            AttemptError::BadBody(_) => false,
        }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts([WirePart<'a>; 2]),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    ImageUrl { image_url: WireImageUrl<'a> },
    Text { text: &'a str },
}

#[derive(Serialize)]
struct WireImageUrl<'a> {
    url: &'a str,
}

#[derive(Deserialize)]
struct CompletionBody {
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
}

#[derive(Deserialize)]
struct CompletionMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

pub struct UpstreamClient {
    http: reqwest::Client,
    /// Parsed once: reqwest would parse a string URL again on every attempt.
    endpoint: reqwest::Url,
    settings: UpstreamSettings,
    metrics: Metrics,
    audit: Option<Arc<AuditLog>>,
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
            metrics,
            audit,
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
    /// data URI) before the text.
    ///
    /// The image is not copied into the body: the JSON is serialized with an empty URL and cut
    /// there, and the turn's shared image bytes go between the two halves on the wire. A data
    /// URI has nothing JSON escapes, so the bytes sent are exactly `serde_json`'s.
    pub fn request_body(&self, call: &ChatCall) -> RequestBody {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &call.system {
            messages.push(WireMessage {
                role: "system",
                content: WireContent::Text(system),
            });
        }
        let user = match &call.image {
            Some(_) => WireContent::Parts([
                WirePart::ImageUrl {
                    image_url: WireImageUrl { url: "" },
                },
                WirePart::Text {
                    text: &call.user_text,
                },
            ]),
            None => WireContent::Text(&call.user_text),
        };
        messages.push(WireMessage {
            role: "user",
            content: user,
        });
        let body = WireRequest {
            model: &self.settings.model,
            messages,
            max_tokens: call.max_tokens,
            temperature: call.temperature,
            response_format: call.response_format.as_ref(),
        };
        let json = Bytes::from(serde_json::to_vec(&body).expect("a chat request serializes"));
        match &call.image {
            None => RequestBody::new([json]),
            Some(image) => {
                // Quotes inside string values are escaped, so this structural pattern occurs
                // once: at the image part, the first part of the user turn. Searched from the
                // end, past the question only, not the long system prompt.
                let url_start = rfind(&json, br#"{"url":""}"#)
                    .expect("the image part is in the body")
                    + br#"{"url":""#.len();
                let mut head = json;
                let tail = head.split_off(url_start);
                let [prefix, payload] = image.pieces();
                RequestBody::new([head, prefix.clone(), payload.clone(), tail])
            }
        }
    }

    /// One logical call with retries, backoff and the overall deadline. `request_id` (the
    /// turn's `x-request-id`) goes on every attempt, so upstream logs join the edge's.
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
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_backoff)
            .with_max_delay(policy.max_backoff)
            .with_max_times(policy.max_retries)
            .with_jitter();
        let attempt = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(&encoded, request_id)
        };
        let retrying = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(AttemptError::is_retryable)
            // Retry-After replaces the backoff delay, but only while the budget lasts: `None`
            // from the backoff means the retries are spent.
            .adjust(|error, delay| {
                delay.map(|delay| retry_delay(error, delay, policy.max_retry_after))
            })
            .notify(|error, delay| {
                retries.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .upstream_retries
                    .with_label_values(&[call.kind.as_str()])
                    .inc();
                tracing::warn!(
                    kind = call.kind.as_str(),
                    ?error,
                    ?delay,
                    "retrying upstream call"
                );
            });
        let result = match tokio::time::timeout(policy.call_deadline, retrying).await {
            Err(_) => Err(UpstreamError::DeadlineExceeded {
                deadline_ms: policy.call_deadline.as_millis() as u64,
            }),
            Ok(Ok(mut reply)) => {
                reply.retries = retries.load(Ordering::Relaxed);
                Ok(reply)
            }
            Ok(Err(error)) => Err(self.final_error(error, attempts.load(Ordering::Relaxed))),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        self.metrics
            .upstream_calls
            .with_label_values(&[call.kind.as_str(), outcome])
            .inc();
        self.metrics
            .upstream_latency
            .with_label_values(&[call.kind.as_str()])
            .observe(started.elapsed().as_secs_f64());
        if let Some(audit) = &self.audit {
            audit.record(&AuditRecord {
                kind: call.kind.as_str(),
                model: &self.settings.model,
                request_bytes: encoded.len(),
                image_bytes: call.image.as_ref().map_or(0, |image| image.len()),
                response_bytes: result.as_ref().map_or(0, |reply| reply.content.len()),
                attempts: attempts.load(Ordering::Relaxed),
                outcome,
                duration_ms: started.elapsed().as_secs_f64() * 1e3,
            });
        }
        result
    }

    fn final_error(&self, error: AttemptError, attempts: u32) -> UpstreamError {
        match error {
            AttemptError::Status {
                status, message, ..
            } if error_is_final_status(status) => UpstreamError::Rejected { status, message },
            AttemptError::Status {
                status, message, ..
            } => UpstreamError::Unavailable {
                status,
                attempts,
                message,
            },
            AttemptError::Timeout => UpstreamError::Timeout {
                timeout_ms: self.settings.retry.attempt_timeout.as_millis() as u64,
                attempts,
            },
            AttemptError::Transport(message) => UpstreamError::Unreachable { attempts, message },
            AttemptError::BadBody(message) => UpstreamError::BadResponse { message },
        }
    }

    async fn attempt(
        &self,
        encoded: &RequestBody,
        request_id: Option<&HeaderValue>,
    ) -> Result<ChatReply, AttemptError> {
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
        let response = request.send().await.map_err(classify_transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            let text = response.text().await.unwrap_or_default();
            return Err(AttemptError::Status {
                status: status.as_u16(),
                retry_after,
                message: upstream_error_message(&text),
            });
        }
        let bytes = response.bytes().await.map_err(classify_transport_error)?;
        let body: CompletionBody = serde_json::from_slice(&bytes)
            .map_err(|error| AttemptError::BadBody(format!("not a chat completion: {error}")))?;
        let choice = body
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| AttemptError::BadBody("no choices in the completion".into()))?;
        let usage = body.usage.unwrap_or_default();
        Ok(ChatReply {
            content: choice.message.content.unwrap_or_default(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            retries: 0,
        })
    }
}

/// The wait before the next attempt: the upstream's `Retry-After` when it sent one (cut to
/// `max_retry_after`), else the backoff's delay.
fn retry_delay(error: &AttemptError, backoff: Duration, max_retry_after: Duration) -> Duration {
    match error {
        AttemptError::Status {
            retry_after: Some(wait),
            ..
        } => (*wait).min(max_retry_after),
        _ => backoff,
    }
}

/// A request body as a few shared chunks, sent back to back with an exact `Content-Length`.
/// Cloning it (once per attempt) clones reference counts, not bytes.
#[derive(Debug, Clone)]
pub struct RequestBody {
    /// In wire order; consumed from the front as the body is sent.
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl RequestBody {
    fn new<const N: usize>(chunks: [Bytes; N]) -> Self {
        let chunks: std::collections::VecDeque<Bytes> = chunks
            .into_iter()
            .filter(|chunk| !chunk.is_empty())
            .collect();
        let remaining = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Self { chunks, remaining }
    }

    pub fn len(&self) -> usize {
        self.remaining as usize
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The whole body in one buffer (a copy; for tests and logs, not the send path).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter().copied())
            .collect()
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front().map(|chunk| {
            self.remaining -= chunk.len() as u64;
            Ok(http_body::Frame::data(chunk))
        });
        std::task::Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

fn error_is_final_status(status: u16) -> bool {
    (400..500).contains(&status) && status != 429
}

fn classify_transport_error(error: reqwest::Error) -> AttemptError {
    if error.is_timeout() {
        AttemptError::Timeout
    } else {
        AttemptError::Transport(error.without_url().to_string())
    }
}

/// `Retry-After` in either form of RFC 9110 section 10.2.3: delta-seconds (integer, or decimal
/// as some proxies send), or an HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime
/// forms). A date in the past means "now". Anything else is `None`: the exponential backoff
/// applies. The caller cuts long waits to its maximum.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] against a given clock, for tests.
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            // Far beyond any sane wait; the caller's maximum applies anyway.
            .then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The upstream's own error message when it sent OpenAI's error shape, else the body's start.
fn upstream_error_message(text: &str) -> String {
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|value| {
        value["error"]["message"]
            .as_str()
            .or_else(|| value["message"].as_str())
            .map(str::to_owned)
    });
    let mut message = from_json.unwrap_or_else(|| text.trim().to_owned());
    if message.len() > 300 {
        let mut end = 300;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_delta_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn retry_after_takes_all_three_http_date_forms() {
        // RFC 9110's example instant, 1994-11-06 08:49:37 UTC, and a clock 90 s before it.
        let instant = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = instant - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
            "Sunday, 06-Nov-94 08:49:37 GMT", // obsolete RFC 850
            "Sun Nov  6 08:49:37 1994",       // obsolete asctime
        ] {
            assert_eq!(
                parse_retry_after_at(form, now),
                Some(Duration::from_secs(90)),
                "{form}"
            );
        }
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 + 3600);
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_malformed_date_falls_back_to_the_backoff() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after_at("Sun, 06 Nov 1994 08:49", now), None);
        assert_eq!(
            parse_retry_after_at("Sun, 32 Nov 1994 08:49:37 GMT", now),
            None
        );
    }

    #[test]
    fn retry_after_replaces_the_backoff_and_is_cut_to_the_maximum() {
        let backoff = Duration::from_millis(40);
        let max = Duration::from_secs(30);
        let status = |retry_after| AttemptError::Status {
            status: 503,
            retry_after,
            message: String::new(),
        };
        assert_eq!(retry_delay(&status(None), backoff, max), backoff);
        assert_eq!(
            retry_delay(&status(Some(Duration::from_secs(2))), backoff, max),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(&status(Some(Duration::ZERO)), backoff, max),
            Duration::ZERO
        );
        // A date a year ahead waits the maximum, not a year.
        let next_year = parse_retry_after_at(
            "Mon, 06 Nov 1995 08:49:37 GMT",
            SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777),
        );
        assert_eq!(retry_delay(&status(next_year), backoff, max), max);
        assert_eq!(retry_delay(&AttemptError::Timeout, backoff, max), backoff);
    }

    fn client() -> UpstreamClient {
        let retry = RetryPolicy {
            attempt_timeout: Duration::from_secs(1),
            call_deadline: Duration::from_secs(1),
            max_retries: 0,
            min_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_retry_after: Duration::ZERO,
        };
        let settings = UpstreamSettings {
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "m".into(),
            api_key: None,
            json_schema: false,
            verify_json_schema: false,
            http1_only: false,
            retry,
        };
        UpstreamClient::new(settings, Metrics::new(), None).unwrap()
    }

    #[test]
    fn the_spliced_body_is_exactly_the_serialized_request() {
        use base64::Engine;
        let png = [
            &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a][..],
            &[0; 300],
        ]
        .concat();
        let image =
            crate::image::image_data_uri(base64::engine::general_purpose::STANDARD.encode(png))
                .unwrap();
        let url = image.to_string();
        // Prompts that contain the splice pattern itself, quotes and non-ASCII.
        let call = ChatCall {
            kind: CallKind::Verify,
            system: Some(r#"sys {"url":""} "quoted" é"#.into()),
            user_text: r#"Q1. {"url":""}? \ "#.into(),
            image: Some(image.clone()),
            max_tokens: Some(5),
            temperature: Some(0.0),
            response_format: None,
        };
        let body = client().request_body(&call);
        // The image's pieces are the turn's buffers, not copies.
        assert_eq!(body.chunks.len(), 4);
        let [prefix, payload] = image.pieces();
        assert_eq!(body.chunks[1].as_ptr(), prefix.as_ptr());
        assert_eq!(body.chunks[2].as_ptr(), payload.as_ptr());
        let expected = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": r#"sys {"url":""} "quoted" é"#},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": r#"Q1. {"url":""}? \ "#},
                ]},
            ],
            "max_tokens": 5,
            "temperature": 0.0,
        });
        let sent = body.to_vec();
        assert_eq!(serde_json::from_slice::<Value>(&sent).unwrap(), expected);
        // Byte for byte what serializing the URL itself gives.
        let whole = WireRequest {
            model: "m",
            messages: vec![
                WireMessage {
                    role: "system",
                    content: WireContent::Text(call.system.as_deref().unwrap()),
                },
                WireMessage {
                    role: "user",
                    content: WireContent::Parts([
                        WirePart::ImageUrl {
                            image_url: WireImageUrl { url: &url },
                        },
                        WirePart::Text {
                            text: &call.user_text,
                        },
                    ]),
                },
            ],
            max_tokens: Some(5),
            temperature: Some(0.0),
            response_format: None,
        };
        assert_eq!(sent, serde_json::to_vec(&whole).unwrap());
        assert_eq!(body.len(), sent.len());
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some(body.len() as u64)
        );

        // Without an image: one chunk, the text as a plain string.
        let call = ChatCall {
            image: None,
            system: None,
            ..call
        };
        let body = client().request_body(&call);
        assert_eq!(body.chunks.len(), 1);
        let sent: Value = serde_json::from_slice(&body.to_vec()).unwrap();
        assert_eq!(sent["messages"][0]["content"], r#"Q1. {"url":""}? \ "#);
    }

    #[test]
    fn only_429_and_5xx_are_retried_among_statuses() {
        let status = |status| AttemptError::Status {
            status,
            retry_after: None,
            message: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(404).is_retryable());
    }
}

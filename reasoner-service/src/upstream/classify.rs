//! Error classification: what one failed HTTP attempt was, whether it is worth another try,
//! and what the logical call's failure is once the retries are spent. 429, 5xx, timeouts and
//! transport failures are retried; any other 4xx is the caller's fault and final.

use std::time::Duration;

use serde_json::Value;

use super::retry::parse_retry_after;

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
    /// A streamed answer sent nothing for longer than the per-attempt timeout.
    #[error("the large model's stream sent nothing for {idle_ms} ms")]
    Stalled { idle_ms: u64 },
    /// A streamed answer's connection broke before `[DONE]` (retrying would repeat text the
    /// client already has).
    #[error("the large model's stream broke off: {message}")]
    Interrupted { message: String },
}

impl UpstreamError {
    /// The client-facing sentence: the failure's kind with the status and counts, never the
    /// large model's own error text (which the `Display` above keeps for the log).
    pub fn client_message(&self) -> String {
        match self {
            UpstreamError::Rejected { status, .. } => {
                format!("the large model rejected the request (HTTP {status})")
            }
            UpstreamError::Unavailable {
                status, attempts, ..
            } => format!("the large model answered HTTP {status} on all {attempts} attempts"),
            UpstreamError::Timeout { .. }
            | UpstreamError::DeadlineExceeded { .. }
            | UpstreamError::Stalled { .. } => self.to_string(),
            UpstreamError::Interrupted { .. } => {
                "the large model's stream broke off before the answer was complete".to_string()
            }
            UpstreamError::Unreachable { attempts, .. } => {
                format!("the large model could not be reached after {attempts} attempts")
            }
            UpstreamError::BadResponse { .. } => {
                "the large model's response could not be read".to_string()
            }
        }
    }

    /// The metrics label and audit field of a failed call.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::DeadlineExceeded { .. } => "deadline",
            UpstreamError::Unreachable { .. } => "unreachable",
            UpstreamError::BadResponse { .. } => "bad_response",
            UpstreamError::Stalled { .. } => "stalled",
            UpstreamError::Interrupted { .. } => "interrupted",
        }
    }
}

/// One failed HTTP attempt, before the retry decision.
#[derive(Debug)]
pub(super) enum AttemptError {
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
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => *status == 429 || *status >= 500,
            AttemptError::Timeout | AttemptError::Transport(_) => true,
            AttemptError::BadBody(_) => false,
        }
    }

    /// A non-2xx reply: its status, its `Retry-After` and the upstream's own message.
    pub(super) async fn from_status(response: reqwest::Response) -> Self {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        AttemptError::Status {
            status,
            retry_after,
            message: upstream_error_message(&text),
        }
    }

    pub(super) fn from_transport(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            AttemptError::Timeout
        } else {
            AttemptError::Transport(error.without_url().to_string())
        }
    }

    /// The logical call's error when this was its last attempt, `attempts` in all.
    pub(super) fn into_final(self, attempts: u32, attempt_timeout: Duration) -> UpstreamError {
        match self {
            AttemptError::Status {
                status, message, ..
            } if is_final_status(status) => UpstreamError::Rejected { status, message },
            AttemptError::Status {
                status, message, ..
            } => UpstreamError::Unavailable {
                status,
                attempts,
                message,
            },
            AttemptError::Timeout => UpstreamError::Timeout {
                timeout_ms: attempt_timeout.as_millis() as u64,
                attempts,
            },
            AttemptError::Transport(message) => UpstreamError::Unreachable { attempts, message },
            AttemptError::BadBody(message) => UpstreamError::BadResponse { message },
        }
    }
}

fn is_final_status(status: u16) -> bool {
    (400..500).contains(&status) && status != 429
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

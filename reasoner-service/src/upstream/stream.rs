//! A streamed answer call: `stream: true` (with `stream_options.include_usage`), the reply read
//! as server-sent events (`slc_serve::sse`), each chunk's text handed on as it arrives.
//!
//! Opening the stream is retried like any call (429, 5xx, timeouts, transport failures), but
//! once text has been handed on nothing is retried: a second attempt would repeat it. Three
//! bounds apply: the call's overall deadline (a stream that never ends), the per-attempt
//! timeout between two chunks (a stream that stalls: `Stalled`), and a cap on the text.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use futures::StreamExt;
use slc_serve::sse::SseParser;

use super::classify::{AttemptError, UpstreamError};
use super::outcome::FinishedCall;
use super::{ChatCall, ChatReply, RequestBody, UpstreamClient, wire};

/// Longest line or event accepted from the stream: a chunk is a few hundred bytes.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// Longest answer accepted from a stream (`max_answer_tokens` is capped far below this).
const MAX_STREAMED_ANSWER_BYTES: usize = 4 << 20;

impl UpstreamClient {
    /// One streamed call: `on_delta` gets each piece of text as the large model sends it; the
    /// reply has the whole text and the usage of the last chunk.
    pub async fn chat_stream<F, Fut>(
        &self,
        call: &ChatCall,
        request_id: Option<&HeaderValue>,
        on_delta: F,
    ) -> Result<ChatReply, UpstreamError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let started = Instant::now();
        let encoded = wire::encode(&self.settings.model, call, true);
        let attempts = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let policy = &self.settings.retry;
        let streamed = async {
            let open = || {
                attempts.fetch_add(1, Ordering::Relaxed);
                self.open_stream(&encoded, request_id)
            };
            let response = self
                .retried(call.kind, open, &retries)
                .await
                .map_err(|error| {
                    error.into_final(attempts.load(Ordering::Relaxed), policy.attempt_timeout)
                })?;
            read_stream(response, policy.attempt_timeout, on_delta).await
        };
        let result = match tokio::time::timeout(policy.call_deadline, streamed).await {
            Err(_) => Err(UpstreamError::DeadlineExceeded {
                deadline_ms: policy.call_deadline.as_millis() as u64,
            }),
            Ok(Ok(mut reply)) => {
                reply.retries = retries.load(Ordering::Relaxed);
                Ok(reply)
            }
            Ok(Err(error)) => Err(error),
        };
        self.recorder.finish(&FinishedCall {
            kind: call.kind,
            model: &self.settings.model,
            request_bytes: encoded.len(),
            image_bytes: call.image.as_ref().map_or(0, |image| image.len()),
            attempts: attempts.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            result: &result,
        });
        result
    }

    /// One attempt at opening the stream: the request sent and a 2xx head back within the
    /// attempt timeout. The body is read under the call's deadline instead (reqwest's own
    /// timeout would cut a long answer off); reqwest's is set past it, so the deadline, not a
    /// transport error, is what a never-ending stream meets.
    async fn open_stream(
        &self,
        encoded: &RequestBody,
        request_id: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, AttemptError> {
        let request = self
            .authorized_post(encoded, request_id)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(self.settings.retry.call_deadline + Duration::from_secs(1));
        let response = tokio::time::timeout(self.settings.retry.attempt_timeout, request.send())
            .await
            .map_err(|_| AttemptError::Timeout)?
            .map_err(AttemptError::from_transport)?;
        if !response.status().is_success() {
            return Err(AttemptError::from_status(response).await);
        }
        Ok(response)
    }
}

/// Reads the event stream to `[DONE]`, handing on each chunk's text.
async fn read_stream<F, Fut>(
    response: reqwest::Response,
    idle_timeout: Duration,
    mut on_delta: F,
) -> Result<ChatReply, UpstreamError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut reply = ChatReply::default();
    let bad = |message: String| UpstreamError::BadResponse { message };
    loop {
        let next = tokio::time::timeout(idle_timeout, body.next())
            .await
            .map_err(|_| UpstreamError::Stalled {
                idle_ms: idle_timeout.as_millis() as u64,
            })?;
        let bytes = match next {
            Some(Ok(bytes)) => bytes,
            Some(Err(error)) => {
                return Err(UpstreamError::Interrupted {
                    message: error.without_url().to_string(),
                });
            }
            None => {
                return Err(UpstreamError::Interrupted {
                    message: "the stream ended without [DONE]".into(),
                });
            }
        };
        for event in parser
            .push(&bytes)
            .map_err(|error| bad(error.to_string()))?
        {
            if event.data.trim() == "[DONE]" {
                return Ok(reply);
            }
            let chunk = wire::decode_chunk(&event.data).map_err(bad)?;
            if let Some(message) = chunk.error {
                return Err(UpstreamError::Interrupted { message });
            }
            if let Some((prompt_tokens, completion_tokens)) = chunk.usage {
                reply.prompt_tokens = prompt_tokens;
                reply.completion_tokens = completion_tokens;
            }
            if chunk.text.is_empty() {
                continue;
            }
            if reply.content.len() + chunk.text.len() > MAX_STREAMED_ANSWER_BYTES {
                return Err(bad(format!(
                    "the streamed answer is longer than {MAX_STREAMED_ANSWER_BYTES} bytes"
                )));
            }
            reply.content.push_str(&chunk.text);
            on_delta(chunk.text).await;
        }
    }
}

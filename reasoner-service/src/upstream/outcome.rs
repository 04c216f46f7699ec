//! The one place a call's outcome is recorded: the retry counter and its warning while the
//! call runs, then the call counter, the latency histogram and the audit line when it ends.

use std::sync::Arc;
use std::time::Duration;

use super::classify::{AttemptError, UpstreamError};
use super::{CallKind, ChatReply};
use crate::audit::{AuditLog, AuditRecord};
use crate::metrics::Metrics;

/// What one logical call did, retries included.
pub(super) struct FinishedCall<'a> {
    pub kind: CallKind,
    pub model: &'a str,
    /// The JSON body sent, image included.
    pub request_bytes: usize,
    pub image_bytes: usize,
    pub attempts: u32,
    pub elapsed: Duration,
    pub result: &'a Result<ChatReply, UpstreamError>,
}

/// Metrics and the optional audit log, shared by every call of the client.
pub(super) struct Recorder {
    metrics: Metrics,
    audit: Option<Arc<AuditLog>>,
}

impl Recorder {
    pub(super) fn new(metrics: Metrics, audit: Option<Arc<AuditLog>>) -> Self {
        Self { metrics, audit }
    }

    /// An attempt failed and another follows after `delay`.
    pub(super) fn retry(&self, kind: CallKind, error: &AttemptError, delay: Duration) {
        self.metrics
            .upstream_retries
            .with_label_values(&[kind.as_str()])
            .inc();
        tracing::warn!(
            kind = kind.as_str(),
            ?error,
            ?delay,
            "retrying upstream call"
        );
    }

    pub(super) fn finish(&self, call: &FinishedCall<'_>) {
        let kind = call.kind.as_str();
        let outcome = match call.result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        self.metrics
            .upstream_calls
            .with_label_values(&[kind, outcome])
            .inc();
        self.metrics
            .upstream_latency
            .with_label_values(&[kind])
            .observe(call.elapsed.as_secs_f64());
        if let Some(audit) = &self.audit {
            audit.record(&AuditRecord {
                kind,
                model: call.model,
                request_bytes: call.request_bytes,
                image_bytes: call.image_bytes,
                response_bytes: call.result.as_ref().map_or(0, |reply| reply.content.len()),
                attempts: call.attempts,
                outcome,
                duration_ms: call.elapsed.as_secs_f64() * 1e3,
            });
        }
    }
}

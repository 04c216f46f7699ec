//! One job on a worker: skipped when its deadline passed or its client left, run under a
//! panic guard (tch panics on libtorch errors such as out-of-memory), answered on its channel.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use super::{Job, JobKind, WorkerError};
use crate::metrics::Metrics;
use crate::model::{EdgeModels, TokenControl};

/// Runs one job and answers its request. `Err` with the panic's message when the model
/// panicked; the request was answered with a 500 then.
pub(super) fn run_job(models: &mut EdgeModels, job: Job, metrics: &Metrics) -> Result<(), String> {
    let deadline = job.deadline;
    match job.kind {
        JobKind::Generate {
            request,
            pieces,
            reply,
        } => {
            if let Some(reason) = skip_reason(deadline, reply.is_closed()) {
                metrics.dropped_requests.with_label_values(&[reason]).inc();
                let _ = reply.send(Err(WorkerError::DeadlineExceeded));
                return Ok(());
            }
            let mut deadline_hit = false;
            let mut on_text = |piece: &str| {
                if Instant::now() >= deadline {
                    deadline_hit = true;
                    return TokenControl::Stop;
                }
                if reply.is_closed() {
                    return TokenControl::Stop;
                }
                if let Some(pieces) = &pieces
                    && pieces.send(piece.to_string()).is_err()
                {
                    return TokenControl::Stop;
                }
                TokenControl::Continue
            };
            let result = guarded(|| models.vlm.generate(&request, &mut on_text));
            let (outcome, panicked) = match result {
                Err(panic) => (
                    Err(WorkerError::Model(format!("the model panicked: {panic}"))),
                    Some(panic),
                ),
                Ok(Ok(_)) if deadline_hit => (Err(WorkerError::DeadlineExceeded), None),
                Ok(Ok(output)) => {
                    metrics.record_generation(&output);
                    (Ok(output), None)
                }
                Ok(Err(error)) => (Err(WorkerError::from(error)), None),
            };
            let _ = reply.send(outcome);
            panicked.map_or(Ok(()), Err)
        }
        JobKind::Embed { images, reply } => {
            if let Some(reason) = skip_reason(deadline, reply.is_closed()) {
                metrics.dropped_requests.with_label_values(&[reason]).inc();
                let _ = reply.send(Err(WorkerError::DeadlineExceeded));
                return Ok(());
            }
            match guarded(|| models.embedder.embed_images(&images)) {
                Ok(result) => {
                    let _ = reply.send(result.map_err(WorkerError::from));
                    Ok(())
                }
                Err(panic) => {
                    let error = WorkerError::Model(format!("the model panicked: {panic}"));
                    let _ = reply.send(Err(error));
                    Err(panic)
                }
            }
        }
    }
}

/// Runs `job`, turning a panic (tch panics on libtorch errors such as out-of-memory) into
/// its message instead of the end of the worker thread.
fn guarded<T>(job: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(job)).map_err(|panic| panic_message(&panic))
}

/// Why a queued job must not reach the model, if it must not.
fn skip_reason(deadline: Instant, client_gone: bool) -> Option<&'static str> {
    if client_gone {
        Some("client_gone")
    } else if Instant::now() >= deadline {
        Some("deadline")
    } else {
        None
    }
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

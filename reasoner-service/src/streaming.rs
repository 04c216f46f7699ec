//! `POST /v1/reason` with `stream: true`: the turn as server-sent events (`verification`,
//! `delta`s, then `done` or `error`; names in `shared_types::stream`).
//!
//! The turn runs on its own task so that events flow while it works, but it belongs to the
//! response: when the client leaves, hyper drops the body, the body drops the task's
//! [`AbortOnDrop`], and aborting the turn drops its upstream call, which closes the connection
//! to the large model. The caller's deadline (`x-slc-deadline-ms`) bounds it as it bounds a
//! plain turn.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use shared_types::{
    AnswerDelta, EVENT_DELTA, EVENT_DONE, EVENT_ERROR, EVENT_VERIFICATION, VerificationEvent,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::cache::Caller;
use crate::error::ReasonerError;
use crate::turn::{Reasoner, TurnEvent};
use crate::upstream::UpstreamError;
use crate::validation::ValidReasonRequest;

/// Events buffered between the turn and a slow client; the turn waits beyond this.
const EVENT_BUFFER: usize = 32;

/// Aborts the task when dropped: the turn lives exactly as long as its response body.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The streamed response of a validated turn.
pub fn streamed_turn(
    reasoner: std::sync::Arc<Reasoner>,
    request: ValidReasonRequest,
    caller: Caller,
    request_id: Option<HeaderValue>,
    deadline: Option<Duration>,
) -> Response {
    let (events, receiver) = mpsc::channel::<Event>(EVENT_BUFFER);
    let turn = async move {
        let (turn_events, mut pieces) = mpsc::channel::<TurnEvent>(EVENT_BUFFER);
        let forward = {
            let events = events.clone();
            async move {
                while let Some(piece) = pieces.recv().await {
                    if events.send(turn_event(piece)).await.is_err() {
                        break;
                    }
                }
            }
        };
        let run = async {
            let result = within(
                deadline,
                reasoner.run(&request, caller, request_id.as_ref(), Some(&turn_events)),
            )
            .await;
            drop(turn_events);
            result
        };
        let (result, ()) = tokio::join!(run, forward);
        let last = match result {
            Ok(response) => json_event(EVENT_DONE, &response),
            Err(error) => json_event(EVENT_ERROR, &error.into_stream_error()),
        };
        let _ = events.send(last).await;
    };
    let guard = AbortOnDrop(tokio::spawn(turn.in_current_span()));
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(move |event| {
        // The guard moves into the body: dropping the body aborts the turn.
        let _ = &guard;
        Ok::<_, Infallible>(event)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn within<T>(
    deadline: Option<Duration>,
    turn: impl std::future::Future<Output = Result<T, ReasonerError>>,
) -> Result<T, ReasonerError> {
    let Some(deadline) = deadline else {
        return turn.await;
    };
    tokio::time::timeout(deadline, turn)
        .await
        .unwrap_or(Err(ReasonerError::Upstream(
            UpstreamError::DeadlineExceeded {
                deadline_ms: deadline.as_millis() as u64,
            },
        )))
}

fn turn_event(piece: TurnEvent) -> Event {
    match piece {
        TurnEvent::Verification(refined_cues) => {
            json_event(EVENT_VERIFICATION, &VerificationEvent { refined_cues })
        }
        TurnEvent::Delta(text) => json_event(EVENT_DELTA, &AnswerDelta { text }),
    }
}

fn json_event<T: serde::Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name))
}

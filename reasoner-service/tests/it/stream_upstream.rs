//! A scripted large model that streams: a real loopback server speaking OpenAI's stream format
//! (`data: {chunk}` events, usage in the last chunk, `data: [DONE]`), which can stream slowly,
//! stall, break off halfway or never end, and which records when its client closed the
//! connection before the stream was over. Calls without `stream: true` (identity, verify) get
//! a plain completion from `plain`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// How a streamed answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The usage chunk, then `[DONE]`.
    Done,
    /// Nothing more, the connection held open.
    Stall,
    /// The connection is cut mid-stream (no terminating chunk).
    BreakOff,
    /// The pieces again and again, never `[DONE]`.
    Forever,
}

#[derive(Debug, Clone)]
pub struct StreamScript {
    pub pieces: Vec<String>,
    /// Before each piece.
    pub gap: Duration,
    pub ending: Ending,
}

/// What the upstream saw of one streamed answer.
#[derive(Debug, Clone, Default)]
pub struct StreamRecord {
    pub request: Value,
    /// When `[DONE]` went out.
    pub finished: Option<Instant>,
    /// When the body was dropped before `[DONE]`: the client closed the connection.
    pub closed_early: Option<Instant>,
}

#[derive(Clone)]
struct UpstreamState {
    script: StreamScript,
    plain: Arc<dyn Fn(&Value) -> String + Send + Sync>,
    streams: Arc<Mutex<Vec<StreamRecord>>>,
}

pub struct StreamingUpstream {
    pub address: SocketAddr,
    streams: Arc<Mutex<Vec<StreamRecord>>>,
    _shutdown: oneshot::Sender<()>,
}

impl StreamingUpstream {
    pub async fn start(
        script: StreamScript,
        plain: impl Fn(&Value) -> String + Send + Sync + 'static,
    ) -> Self {
        let streams = Arc::new(Mutex::new(Vec::new()));
        let state = UpstreamState {
            script,
            plain: Arc::new(plain),
            streams: streams.clone(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(state);
        let (address, shutdown) = crate::helpers::serve_on_loopback(router).await;
        Self {
            address,
            streams,
            _shutdown: shutdown,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub fn streams(&self) -> Vec<StreamRecord> {
        self.streams.lock().unwrap().clone()
    }

    /// Waits up to `limit` for the first stream to have been closed by its client.
    pub async fn wait_closed_early(&self, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(closed) = self
                .streams()
                .first()
                .and_then(|record| record.closed_early)
            {
                return Some(closed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

pub fn chunk(text: &str) -> String {
    let chunk = json!({
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    format!("data: {chunk}\n\n")
}

async fn completions(State(state): State<UpstreamState>, raw: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&raw).unwrap();
    if request["stream"] != true {
        let content = (state.plain)(&request);
        return axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        }))
        .into_response();
    }
    let index = {
        let mut streams = state.streams.lock().unwrap();
        streams.push(StreamRecord {
            request,
            ..StreamRecord::default()
        });
        streams.len() - 1
    };
    let guard = CloseGuard {
        streams: state.streams.clone(),
        index,
    };
    let body = futures::stream::unfold(
        (state.script, 0usize, guard),
        |(script, sent, guard)| async move {
            let next = next_frame(&script, sent, &guard).await?;
            Some((next, (script, sent + 1, guard)))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

/// The `sent`-th frame of the stream, or its end.
async fn next_frame(
    script: &StreamScript,
    sent: usize,
    guard: &CloseGuard,
) -> Option<Result<Bytes, std::io::Error>> {
    let pieces = script.pieces.len();
    if sent < pieces || script.ending == Ending::Forever {
        tokio::time::sleep(script.gap).await;
        return Some(Ok(Bytes::from(chunk(&script.pieces[sent % pieces]))));
    }
    match script.ending {
        Ending::Done if sent == pieces => {
            let usage = json!({"choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": pieces}});
            guard.finish();
            Some(Ok(Bytes::from(format!(
                "data: {usage}\n\ndata: [DONE]\n\n"
            ))))
        }
        Ending::Done => None,
        Ending::Stall => {
            std::future::pending::<Infallible>().await;
            None
        }
        Ending::BreakOff => Some(Err(std::io::Error::other("scripted break-off"))),
        Ending::Forever => unreachable!(),
    }
}

/// Records the stream's end: finished when `[DONE]` went out, closed early when the body is
/// dropped before that (hyper drops it when the client's connection is gone).
struct CloseGuard {
    streams: Arc<Mutex<Vec<StreamRecord>>>,
    index: usize,
}

impl CloseGuard {
    fn finish(&self) {
        self.streams.lock().unwrap()[self.index].finished = Some(Instant::now());
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap();
        let record = &mut streams[self.index];
        if record.finished.is_none() {
            record.closed_early = Some(Instant::now());
        }
    }
}

//! A scripted large model for the end-to-end tests that need one the stack's own edge model
//! cannot play: a real loopback server speaking OpenAI's chat completions, which answers the
//! identity and verification calls plainly and streams the answer slowly, one piece every
//! `gap`, recording when it sent `[DONE]` and whether its client closed the connection first.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What the scripted model saw of its streamed answers.
#[derive(Debug, Clone, Default)]
pub struct StreamLog {
    pub requests: Vec<Value>,
    /// When `[DONE]` went out, per stream.
    pub finished: Vec<Instant>,
    /// When a stream's client closed the connection before `[DONE]`.
    pub closed_early: Vec<Instant>,
}

#[derive(Clone)]
struct Script {
    pieces: Arc<Vec<String>>,
    gap: Duration,
    log: Arc<Mutex<StreamLog>>,
}

pub struct ScriptedLlm {
    /// The base URL without `/v1`, as `StackOptions::llm_url` takes it.
    pub url: String,
    log: Arc<Mutex<StreamLog>>,
}

impl ScriptedLlm {
    /// Streams `pieces`, one every `gap`; identity calls get "a dog" for every concept asked,
    /// verification calls "yes" to every question.
    pub async fn start(pieces: &[&str], gap: Duration) -> Result<Self> {
        let log = Arc::new(Mutex::new(StreamLog::default()));
        let script = Script {
            pieces: Arc::new(pieces.iter().map(|piece| piece.to_string()).collect()),
            gap,
            log: log.clone(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(completions))
            .with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self {
            url: format!("http://{address}"),
            log,
        })
    }

    pub fn log(&self) -> StreamLog {
        self.log.lock().unwrap().clone()
    }
}

/// A plain reply to a non-streamed call, told apart by its system prompt's opening.
fn plain_reply(request: &Value) -> String {
    let system = request["messages"][0]["content"].as_str().unwrap_or("");
    let user = request["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .map(|message| message["content"].to_string())
        .unwrap_or_default();
    if system.starts_with("You are an information extractor") {
        // Identity: every `<id>:` line of the concept list.
        let identities: serde_json::Map<String, Value> = user
            .split("\\n")
            .filter_map(|line| line.split_once(": ").map(|(id, _)| id.trim_matches('"')))
            .filter(|id| id.starts_with('<') && id.ends_with('>'))
            .map(|id| {
                (
                    id.to_owned(),
                    json!({"category": "a dog", "attributes": "fluffy"}),
                )
            })
            .collect();
        Value::Object(identities).to_string()
    } else {
        let questions = user.matches("(yes or no)").count().max(1);
        (1..=questions)
            .map(|number| format!("Q{number}. Yes"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn completions(State(script): State<Script>, raw: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&raw) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let streamed = request["stream"] == true;
    script.log.lock().unwrap().requests.push(request.clone());
    if !streamed {
        let content = plain_reply(&request);
        return axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        }))
        .into_response();
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(stream_answer(script, sender));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(ReceiverStream::new(receiver)))
        .unwrap()
}

/// Sends each piece after `gap`, then usage and `[DONE]`. hyper drops the body, and with it
/// the receiver, when the client's connection is gone: a failed send is that close.
async fn stream_answer(script: Script, sender: mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let closed_early =
        |log: &Mutex<StreamLog>| log.lock().unwrap().closed_early.push(Instant::now());
    for piece in script.pieces.iter() {
        tokio::select! {
            () = tokio::time::sleep(script.gap) => {}
            () = sender.closed() => return closed_early(&script.log),
        }
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
        if sender
            .send(Ok(Bytes::from(format!("data: {chunk}\n\n"))))
            .await
            .is_err()
        {
            return closed_early(&script.log);
        }
    }
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": script.pieces.len()}});
    let last = Bytes::from(format!("data: {usage}\n\ndata: [DONE]\n\n"));
    if sender.send(Ok(last)).await.is_err() {
        return closed_early(&script.log);
    }
    script.log.lock().unwrap().finished.push(Instant::now());
}

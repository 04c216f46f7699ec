//! The bench's upstream: an OpenAI-compatible server that sleeps a fixed time per call and
//! books that time per turn (by request id). It reads requests without copying the image and
//! tells the call kinds apart by the reasoner's own system prompts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use shared_types::REQUEST_ID_HEADER;
use slc_reasoner::prompts::{IDENTITY_SYSTEM_PROMPT, VERIFICATION_SYSTEM_PROMPT};

/// Upstream time per turn, keyed by the turn's request id.
#[derive(Default)]
pub struct TurnUpstreamTime {
    pub verify_max: Duration,
    pub answer_total: Duration,
}

#[derive(Clone)]
pub struct UpstreamState {
    sleep: Duration,
    pub per_turn: Arc<Mutex<HashMap<String, TurnUpstreamTime>>>,
    pub calls: Arc<Mutex<u64>>,
}

/// The parts of a chat request the upstream looks at, borrowed from the body: the image URL
/// is skipped, never copied.
#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    messages: Vec<ChatMessage<'a>>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    content: ChatContent<'a>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ChatContent<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<ChatPart<'a>>),
}

#[derive(Deserialize)]
struct ChatPart<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

impl ChatContent<'_> {
    fn text(&self) -> &str {
        match self {
            ChatContent::Text(text) => text,
            ChatContent::Parts(parts) => parts
                .iter()
                .find_map(|part| part.text.as_deref())
                .unwrap_or(""),
        }
    }
}

async fn upstream_handler(
    State(state): State<UpstreamState>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let entered = Instant::now();
    *state.calls.lock().unwrap() += 1;
    let request: ChatRequest = serde_json::from_slice(&body).expect("a chat request");
    let system = request.messages[0].content.text();
    let user = request
        .messages
        .last()
        .expect("a user message")
        .content
        .text();
    let kind = if system == IDENTITY_SYSTEM_PROMPT {
        "identity"
    } else if system == VERIFICATION_SYSTEM_PROMPT {
        "verify"
    } else {
        "answer"
    };
    let content = match kind {
        "identity" => {
            let identities: serde_json::Map<String, Value> = user
                .lines()
                .skip(1)
                .filter_map(|line| line.split_once(": "))
                .map(|(id, _)| {
                    (
                        id.to_owned(),
                        json!({"category": "a dog", "attributes": "playful"}),
                    )
                })
                .collect();
            Value::Object(identities).to_string()
        }
        "verify" => vec!["yes"; user.lines().count()].join(" "),
        _ => "A dog is playing.".to_owned(),
    };
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    drop(request);
    drop(body);
    tokio::time::sleep(state.sleep).await;
    let spent = entered.elapsed();
    if let Some(request_id) = request_id {
        let mut per_turn = state.per_turn.lock().unwrap();
        let entry = per_turn.entry(request_id).or_default();
        match kind {
            "verify" => entry.verify_max = entry.verify_max.max(spent),
            _ => entry.answer_total += spent,
        }
    }
    Json(json!({
        "id": "bench",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }))
}

impl UpstreamState {
    /// Serves the sleeping upstream on a loopback port until the process ends.
    pub async fn start(sleep: Duration) -> std::io::Result<(Self, SocketAddr)> {
        let state = UpstreamState {
            sleep,
            per_turn: Arc::default(),
            calls: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let router = axum::Router::new()
            .route("/v1/chat/completions", post(upstream_handler))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok((state, address))
    }

    pub fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }

    /// The upstream time of a turn: its longest verification call plus its answer calls.
    pub fn time_of(&self, request_id: &str) -> Duration {
        self.per_turn
            .lock()
            .unwrap()
            .get(request_id)
            .map(|time| time.verify_max + time.answer_total)
            .unwrap_or_default()
    }
}

//! Shared test machinery: a scripted OpenAI-compatible upstream that is a real HTTP server on
//! loopback and records every request, and `spawn_app` for the reasoner itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use clap::Parser;
use serde_json::{Value, json};
use shared_types::REQUEST_ID_HEADER;
use slc_reasoner::ServeConfig;
use slc_reasoner::prompts::{IDENTITY_SYSTEM_PROMPT, VERIFICATION_SYSTEM_PROMPT};
use tokio::sync::oneshot;

/// The test image: a real JPEG from the shared sample data (a dog that is not `<bo>`).
pub fn query_image_bytes() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/query.jpg"))
        .expect("tests/fixtures/query.jpg")
}

pub fn query_image_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(query_image_bytes())
}

pub fn query_image_data_uri() -> String {
    format!("data:image/jpeg;base64,{}", query_image_base64())
}

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub body: Value,
    pub authorization: Option<String>,
    /// The request-id header, if the reasoner sent one.
    pub request_id: Option<String>,
    /// The `Content-Length` header (absent for a chunked body) and the bytes received.
    pub content_length: Option<u64>,
    pub body_bytes: usize,
    pub received: Instant,
}

impl Recorded {
    pub fn system(&self) -> Option<&str> {
        self.body["messages"]
            .as_array()?
            .iter()
            .find(|message| message["role"] == "system")?["content"]
            .as_str()
    }

    fn user(&self) -> &Value {
        let messages = self.body["messages"].as_array().expect("messages");
        &messages
            .iter()
            .find(|message| message["role"] == "user")
            .expect("a user message")["content"]
    }

    /// The user turn's text, whether the content is a string or a list of parts.
    pub fn user_text(&self) -> String {
        match self.user() {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter(|part| part["type"] == "text")
                .map(|part| part["text"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join("\n"),
            other => panic!("unexpected user content {other}"),
        }
    }

    /// Every image URL anywhere in the request.
    pub fn image_urls(&self) -> Vec<String> {
        let mut urls = Vec::new();
        for message in self.body["messages"].as_array().unwrap() {
            if let Value::Array(parts) = &message["content"] {
                for part in parts {
                    if part["type"] == "image_url" {
                        urls.push(part["image_url"]["url"].as_str().unwrap().to_owned());
                    }
                }
            }
        }
        urls
    }

    /// The call's kind, told apart by the code's own system prompts: the tests that check
    /// those prompts against the paper (`prompts.rs`) compare the text itself.
    pub fn kind(&self) -> &'static str {
        match self.system() {
            Some(IDENTITY_SYSTEM_PROMPT) => "identity",
            Some(VERIFICATION_SYSTEM_PROMPT) => "verify",
            _ => "answer",
        }
    }
}

/// What the scripted upstream sends back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn content(text: &str) -> Self {
        Self {
            status: 200,
            body: json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
            }),
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: json!({"error": {"message": format!("scripted {status}"), "type": "test"}}),
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }
}

pub type Script = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct UpstreamState {
    script: Script,
    log: Arc<Mutex<Vec<Recorded>>>,
}

pub struct ScriptedUpstream {
    pub address: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    _shutdown: oneshot::Sender<()>,
}

/// Serves `router` on a fresh loopback port until the returned sender is dropped.
pub async fn serve_on_loopback(router: axum::Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
            .unwrap();
    });
    (address, shutdown)
}

impl ScriptedUpstream {
    /// `script(request, index)` decides each reply; `index` counts requests from 0.
    pub async fn start(script: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = UpstreamState {
            script: Arc::new(script),
            log: log.clone(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .with_state(state);
        let (address, shutdown) = serve_on_loopback(router).await;
        Self {
            address,
            log,
            _shutdown: shutdown,
        }
    }

    /// A well-behaved large model: identities from `identities` (id → (category, attributes)),
    /// `verify` for every verification prompt, `answer` for the answer.
    pub async fn answering(
        identities: &[(&str, &str, &str)],
        verify: impl Fn(&str) -> String + Send + Sync + 'static,
        answer: &str,
    ) -> Self {
        let identity_json: serde_json::Map<String, Value> = identities
            .iter()
            .map(|(id, category, attributes)| {
                (
                    id.to_string(),
                    json!({"category": category, "attributes": attributes}),
                )
            })
            .collect();
        let answer = answer.to_owned();
        Self::start(move |request, _| match request.kind() {
            "identity" => {
                // Only the concepts asked about, as a model would.
                let asked: serde_json::Map<String, Value> = identity_json
                    .iter()
                    .filter(|(id, _)| request.user_text().contains(&format!("{id}: ")))
                    .map(|(id, value)| (id.clone(), value.clone()))
                    .collect();
                Reply::content(&Value::Object(asked).to_string())
            }
            "verify" => Reply::content(&verify(&request.user_text())),
            _ => Reply::content(&answer),
        })
        .await
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn requests_of(&self, kind: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }
}

async fn chat_completions(
    State(state): State<UpstreamState>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let recorded = Recorded {
        body,
        content_length: headers
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok()),
        body_bytes: raw.len(),
        authorization: headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        request_id: headers
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        received: Instant::now(),
    };
    let index = {
        let mut log = state.log.lock().unwrap();
        log.push(recorded.clone());
        log.len() - 1
    };
    let reply = (state.script)(&recorded, index);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        Json(reply.body),
    )
        .into_response();
    if let Some(retry_after) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", retry_after.parse().unwrap());
    }
    response
}

/// A reasoner on loopback with its own SQLite file (unless the config says otherwise).
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub state: slc_reasoner::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _directory: Option<Arc<tempfile::TempDir>>,
}

pub fn test_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The config every test starts from: fast backoff, a scratch SQLite file.
pub fn base_config(upstream: &str, database_url: &str) -> ServeConfig {
    ServeConfig::parse_from([
        "slc-reasoner",
        "--bind",
        "127.0.0.1:0",
        "--llm-base-url",
        upstream,
        "--llm-model",
        "test-vlm",
        "--llm-api-key",
        "upstream-secret",
        "--database-url",
        database_url,
        "--llm-min-backoff-ms",
        "10",
        "--llm-max-backoff-ms",
        "50",
        "--llm-attempt-timeout-ms",
        "5000",
        "--llm-call-deadline-ms",
        "20000",
    ])
}

pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

pub async fn spawn_app(upstream: &ScriptedUpstream) -> TestApp {
    spawn_app_with(upstream, |_| {}).await
}

pub async fn spawn_app_with(
    upstream: &ScriptedUpstream,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let directory = Arc::new(tempfile::tempdir().unwrap());
    let database = sqlite_url(&directory.path().join("reasoner.db"));
    let mut config = base_config(&upstream.base_url(), &database);
    tweak(&mut config);
    let mut app = spawn_config(config).await;
    app._directory = Some(directory);
    app
}

pub async fn spawn_config(config: ServeConfig) -> TestApp {
    init_test_log();
    let state = slc_reasoner::build_state(&config).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server_state = state.clone();
    let server = tokio::spawn(async move {
        slc_reasoner::run(listener, server_state, async {
            let _ = stop.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        address,
        client: test_client(),
        state,
        shutdown: Some(shutdown),
        server: Some(server),
        _directory: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.text().await.unwrap())
    }

    /// Stops the server and closes its database pool, as a process exit would.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        self.state.reasoner.cache.close().await;
    }

    pub fn directory(&self) -> Option<PathBuf> {
        self._directory.as_ref().map(|d| d.path().to_owned())
    }
}

/// Asserts the shared error shape and returns its `type`.
pub fn error_type(body: &Value) -> String {
    let kind = body["error"]["type"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
    kind.to_owned()
}

/// With `TEST_LOG` set (to a filter such as `debug` or `slc_reasoner=trace`), the service's
/// log lines go to the test's output; without it the tests stay quiet. Installed once, for
/// the whole test binary.
pub fn init_test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else {
            return;
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// An app's router without a socket, for routing and middleware tests through
/// `Router::oneshot`. The upstream address is never dialled by those tests.
pub async fn router_with(
    tweak: impl FnOnce(&mut ServeConfig),
) -> (axum::Router, tempfile::TempDir) {
    init_test_log();
    let directory = tempfile::tempdir().unwrap();
    let database = sqlite_url(&directory.path().join("reasoner.db"));
    let mut config = base_config("http://127.0.0.1:9/v1", &database);
    tweak(&mut config);
    let state = slc_reasoner::build_state(&config).await.expect("state");
    (slc_reasoner::app(state), directory)
}

/// The real `slc-reasoner serve` binary on a free loopback port, its stdout and stderr in a
/// file, killed when dropped.
pub struct ServedBinary {
    child: std::process::Child,
    pub base: String,
    log: PathBuf,
    _directory: tempfile::TempDir,
}

impl ServedBinary {
    /// Starts `slc-reasoner serve` with `env` (a scratch SQLite database unless `env` names
    /// one) and waits until `/healthz` answers.
    pub async fn start(env: &[(&str, String)]) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = directory.path().join("reasoner.log");
        let output = std::fs::File::create(&log).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_slc-reasoner"));
        command
            .arg("serve")
            .env("SLC_REASONER_BIND", format!("127.0.0.1:{port}"))
            .env(
                "SLC_DATABASE_URL",
                sqlite_url(&directory.path().join("reasoner.db")),
            )
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut served = Self {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            log,
            _directory: directory,
        };
        served.wait_healthy(Duration::from_secs(20)).await;
        served
    }

    /// Polls `/healthz`; panics with the log's tail if the process exits or `limit` passes.
    async fn wait_healthy(&mut self, limit: Duration) {
        let client = test_client();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "slc-reasoner serve exited with {status} before it was healthy; its log ends:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(response) = client.get(format!("{}/healthz", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "slc-reasoner serve was not healthy at {} within {limit:?}; its log ends:\n{}",
            self.base,
            self.log_tail(40)
        );
    }

    /// Everything the process has written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `spawn_app()`: the real router on a loopback port, a fresh database per test, and either
//! the real tch engine on the tiny fixture checkpoint (`real_engine: true`) or the steerable
//! model doubles of `doubles.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use slc_detector::AppState;
use slc_detector::config::ServeConfig;
use slc_detector::embedding::CosineAdapterChooser;
use slc_detector::engine_models::{EngineLoader, bank_chooser};
use slc_detector::model::ModelLoader;
use slc_detector::registry::RegistryOptions;

use crate::doubles::{DoubleControl, DoubleLoader};

/// Changes to a test's `ServeConfig`, applied last.
pub type Tweak = Box<dyn FnOnce(&mut ServeConfig) + Send>;

pub struct TestOptions {
    /// Another database than the test's own fresh SQLite file.
    pub database_url: Option<String>,
    pub meta_concepts: Vec<(String, Vec<f32>)>,
    pub control: DoubleControl,
    /// Wait until the models are loaded (and panic with the reason if they fail to load).
    pub wait_ready: bool,
    /// The real engine: tiny Qwen2.5-VL, tiny CLIP and the fixture adapter bank (another
    /// bank through `tweak`).
    pub real_engine: bool,
    /// The real engine's test hook: a prompt containing this text makes libtorch fail.
    pub fail_on_prompt: Option<String>,
    /// Everything else is the config itself: the test defaults of [`serve_config`], then this.
    pub tweak: Tweak,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            database_url: None,
            meta_concepts: Vec::new(),
            control: DoubleControl::default(),
            wait_ready: true,
            real_engine: false,
            fail_on_prompt: None,
            tweak: Box::new(|_| {}),
        }
    }
}

impl TestOptions {
    /// The defaults with `tweak` applied to the config.
    pub fn tweak(tweak: impl FnOnce(&mut ServeConfig) + Send + 'static) -> Self {
        TestOptions {
            tweak: Box::new(tweak),
            ..TestOptions::default()
        }
    }

    /// The defaults with the reasoner at `address`.
    pub fn reasoner(address: SocketAddr) -> Self {
        Self::tweak(move |config| config.reasoner_url = format!("http://{address}"))
    }
}

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub control: DoubleControl,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _directory: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// POSTs `body` as JSON, unauthenticated.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get_text(path).await).unwrap()
    }

    /// The `model` names `/v1/models` lists, in order.
    pub async fn model_ids(&self) -> Vec<String> {
        self.get_json("/v1/models").await["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|model| model["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Graceful shutdown: returns once the server has stopped.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// The test defaults: limits small enough to reach in a test, one worker, and a reasoner
/// address where nothing listens (port 9, discard, on loopback: connection refused).
pub fn serve_config(database_url: String) -> ServeConfig {
    let mut config = ServeConfig::defaults();
    config.database_url = database_url;
    config.reasoner_url = "http://127.0.0.1:9".into();
    config.reasoner_api_key = Some("edge-key".into());
    config.reasoner_timeout_secs = 10.0;
    config.queue_size = 8;
    config.workers = Some(1);
    config.request_deadline_secs = 30.0;
    config.max_image_pixels = 4_000_000;
    config.max_body_bytes = 4 * 1024 * 1024;
    config.max_concepts_per_request = 4;
    config.max_images_per_concept = 3;
    config.max_chat_images = 3;
    // Tests send bursts with one key; the budget has its own test (`tenants.rs`).
    config.tenant_requests_per_minute = 0;
    config
}

/// With `TEST_LOG` set (to a filter such as `debug` or `slc_detector=trace`), the service's
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

/// The app's router and state without a socket, for routing and middleware tests through
/// `Router::oneshot`, on the model doubles. The reasoner address is never dialled.
pub async fn router_with(
    tweak: impl FnOnce(&mut ServeConfig),
) -> (axum::Router, AppState, tempfile::TempDir) {
    init_test_log();
    let directory = tempfile::tempdir().unwrap();
    let mut config = serve_config(sqlite_url(&directory));
    tweak(&mut config);
    let state = slc_detector::build_state(
        &config,
        Arc::new(DoubleLoader(DoubleControl::default())),
        Arc::new(CosineAdapterChooser::default()),
        RegistryOptions::default(),
    )
    .await
    .unwrap();
    wait_until_loaded(&state).await;
    (slc_detector::app(state.clone()), state, directory)
}

fn sqlite_url(directory: &tempfile::TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("registry.db").display()
    )
}

/// Waits for the models; panics with the reason when their load fails or takes over 60 s.
async fn wait_until_loaded(state: &AppState) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match state.workers.readiness() {
            Ok(()) => return,
            Err(reason) if reason.starts_with("loading the models failed") => {
                panic!("the test app will not become ready: {reason}")
            }
            Err(reason) if std::time::Instant::now() > deadline => {
                panic!("the test app did not become ready in 60 s: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

pub async fn spawn_app(options: TestOptions) -> TestApp {
    spawn_app_with_registry_options(options, RegistryOptions::default()).await
}

pub async fn spawn_app_with_registry_options(
    options: TestOptions,
    registry_options: RegistryOptions,
) -> TestApp {
    init_test_log();
    let directory = tempfile::tempdir().unwrap();
    let database_url = options
        .database_url
        .clone()
        .unwrap_or_else(|| sqlite_url(&directory));
    let mut config = serve_config(database_url);
    let fixtures = engine_fixtures();
    if options.real_engine {
        config.model_dir = fixtures.join("qwen25vl/untied");
        config.clip_dir = fixtures.join("clip/tiny-clip");
        config.adapter_bank = Some(fixtures.join("lora/bank"));
        config.torch_threads = 1;
    }
    (options.tweak)(&mut config);
    let (loader, chooser): (Arc<dyn ModelLoader>, CosineAdapterChooser) = if options.real_engine {
        let bank = config
            .adapter_bank
            .clone()
            .expect("the real engine has a bank");
        (
            Arc::new(EngineLoader {
                options: slc_detector::engine_models::EngineOptions {
                    fail_on_prompt: options.fail_on_prompt.clone(),
                    ..config.engine_options()
                },
            }),
            bank_chooser(&bank, config.adapter_top_k).unwrap(),
        )
    } else {
        (
            Arc::new(DoubleLoader(options.control.clone())),
            CosineAdapterChooser {
                meta_concepts: options.meta_concepts.clone(),
                top_k: 1,
            },
        )
    };
    let state = slc_detector::build_state(&config, loader, Arc::new(chooser), registry_options)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, shutdown_received) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(slc_detector::run(listener, state.clone(), async move {
        let _ = shutdown_received.await;
    }));
    let app = TestApp {
        address,
        client: http_client(),
        control: options.control.clone(),
        state,
        shutdown: Some(shutdown),
        server: Some(server),
        _directory: directory,
    };
    if options.wait_ready {
        wait_until_loaded(&app.state).await;
    }
    app
}

/// The engine crate's fixtures: tiny checkpoints made by its `make_*.py` scripts.
pub fn engine_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

pub fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn data_url(bytes: &[u8], content_type: &str) -> String {
    format!("data:{content_type};base64,{}", base64_of(bytes))
}

/// A small PNG of one colour.
pub fn solid_png(rgb: [u8; 3], width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// Registers a concept through the API and asserts success.
pub async fn register(app: &TestApp, id: &str, description: &str, images: &[Vec<u8>]) {
    let response = app
        .client
        .post(app.url("/v1/concepts"))
        .json(&serde_json::json!({
            "id": id,
            "description": description,
            "images": images.iter().map(|bytes| base64_of(bytes)).collect::<Vec<_>>(),
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 201, "registering {id}: {body}");
}

/// Asserts a typed error response and returns its message.
pub async fn assert_error(response: reqwest::Response, status: u16, kind: &str) -> String {
    let actual = response.status().as_u16();
    let body: serde_json::Value = response
        .json()
        .await
        .unwrap_or_else(|error| panic!("expected a JSON error body with status {status}: {error}"));
    assert_eq!(actual, status, "unexpected status, body {body}");
    assert_eq!(
        body["error"]["type"], kind,
        "unexpected error type, body {body}"
    );
    body["error"]["message"].as_str().unwrap().to_string()
}

/// `SLC_TEST_POSTGRES_URL`, or `None` with a note (a failure when `SLC_REQUIRE_POSTGRES=1`).
pub fn postgres_url() -> Option<String> {
    match std::env::var("SLC_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("SLC_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "SLC_REQUIRE_POSTGRES=1 but SLC_TEST_POSTGRES_URL is unset"
            );
            eprintln!("note: SLC_TEST_POSTGRES_URL is unset; skipping the PostgreSQL case");
            None
        }
    }
}

/// A fresh schema in the test database, and a URL whose connections use it.
pub async fn fresh_postgres_schema(base_url: &str) -> String {
    sqlx::any::install_default_drivers();
    let schema = format!("slc_detector_test_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(base_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let separator = if base_url.contains('?') { '&' } else { '?' };
    format!("{base_url}{separator}options=-c%20search_path%3D{schema}")
}

/// Polls `{base}/healthz` of a spawned binary; panics with the tail of its log when the
/// process exits or 20 s pass.
pub async fn wait_healthy(
    client: &reqwest::Client,
    base: &str,
    child: &mut std::process::Child,
    log: &std::path::Path,
) {
    let tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{base} exited with {status} before answering; its log:\n{}",
                tail()
            );
        }
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{base} did not answer /healthz in 20 s; its log:\n{}",
        tail()
    );
}

/// A plain client. reqwest is built without a bundled crypto provider; the service installs
/// ring's when it builds its reasoner client, but a test that only runs a binary must too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

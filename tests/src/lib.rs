//! The SLC service pair as one runnable stack, shared by the end-to-end tests and the demo:
//! the real `slc-detector` and `slc-reasoner` binaries on free loopback ports, each on SQLite in
//! a temporary directory, the edge on the tiny Qwen2.5-VL checkpoint, tiny CLIP and the fixture
//! adapter bank, and the reasoner using the edge's own OpenAI-compatible endpoint as its large
//! model (the paper's fully local setup, Table 4's 3B row).
//!
//! With `record: true`, two recording proxies sit on the wires (edge → reasoner, and reasoner
//! → large model) so tests can inspect every byte that crossed the privacy boundary.

mod proxy;
mod ready;
pub mod scripted_llm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::http::StatusCode;

pub use proxy::{Recorded, Recording};
pub use ready::{failed_load_reason, wait_ready};

use proxy::start_proxy;

/// The key the app uses against the edge, the edge against the reasoner, and the reasoner
/// against the edge's OpenAI endpoint.
pub const APP_KEY: &str = "demo-app-key";
pub const EDGE_TO_REASONER_KEY: &str = "demo-edge-key";
pub const REASONER_TO_LLM_KEY: &str = "demo-reasoner-key";

/// The repository root (this crate sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace")
        .to_path_buf()
}

/// `explicit`, or the folder of the running binary (the services are built next to it).
pub fn bin_dir_or_own(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("the running binary has no folder")?
            .to_path_buf()),
    }
}

/// The engine fixtures the stack runs on.
pub fn engine_fixtures() -> PathBuf {
    repo_root().join("engine/tests/fixtures")
}

/// This crate's own fixtures: the sample concepts and a query photo.
pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

pub struct StackOptions {
    /// Where `slc-detector` and `slc-reasoner` were built (`target/debug` or `target/release`).
    pub bin_dir: PathBuf,
    /// The edge's checkpoint (default: the tiny fixture); the reasoner uses it too.
    pub model_dir: PathBuf,
    /// The adapter bank (default: the fixture bank, made for the tiny checkpoint).
    pub adapter_bank: Option<PathBuf>,
    /// Put recording proxies on both wires.
    pub record: bool,
    /// Ask the reasoner for `response_format: json_schema` (the edge supports it).
    pub llm_json_schema: bool,
    /// Extra env vars for the edge (for example `SLC_VISION_CACHE_MIB=0`).
    pub edge_env: Vec<(String, String)>,
    /// Extra env vars for the reasoner.
    pub reasoner_env: Vec<(String, String)>,
    /// How long to wait for both services to load and warm up.
    pub ready_timeout: Duration,
    /// Where the services' logs go; `None` discards them.
    pub log_dir: Option<PathBuf>,
    /// The reasoner's large model (a base URL without `/v1`); the edge's own OpenAI endpoint
    /// when `None`.
    pub llm_url: Option<String>,
}

impl StackOptions {
    pub fn new(bin_dir: PathBuf) -> Self {
        StackOptions {
            bin_dir,
            model_dir: engine_fixtures().join("qwen25vl/untied"),
            adapter_bank: Some(engine_fixtures().join("lora/bank")),
            ready_timeout: Duration::from_secs(180),
            record: false,
            llm_json_schema: true,
            edge_env: Vec::new(),
            reasoner_env: Vec::new(),
            log_dir: None,
            llm_url: None,
        }
    }
}

pub struct Stack {
    pub edge_url: String,
    pub reasoner_url: String,
    /// What reached the reasoner from the edge (empty unless recording).
    pub to_reasoner: Recording,
    /// What reached the large model (the edge's OpenAI endpoint) from the reasoner.
    pub to_large_model: Recording,
    pub client: reqwest::Client,
    edge: Child,
    reasoner: Child,
    _directory: tempfile::TempDir,
}

/// The edge, `slc-detector serve`, on `port` with the fixture CLIP and its own SQLite file.
fn spawn_edge(
    options: &StackOptions,
    binary: &Path,
    port: u16,
    reasoner_url: &str,
    directory: &Path,
) -> Result<Child> {
    let fixtures = engine_fixtures();
    let mut edge = Command::new(binary);
    edge.arg("serve")
        .env("SLC_BIND", format!("127.0.0.1:{port}"))
        .env("SLC_MODEL_DIR", &options.model_dir)
        .env("SLC_CLIP_DIR", fixtures.join("clip/tiny-clip"))
        .env(
            "SLC_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", directory.join("edge.db").display()),
        )
        .env("SLC_REASONER_URL", reasoner_url)
        .env("SLC_REASONER_API_KEY", EDGE_TO_REASONER_KEY)
        .env("SLC_API_KEYS", format!("{APP_KEY},{REASONER_TO_LLM_KEY}"))
        // The corpus and load tests send hundreds of requests a second with one key.
        .env("SLC_TENANT_REQUESTS_PER_MINUTE", "0")
        .env("SLC_WORKERS", "1")
        .envs(
            options
                .adapter_bank
                .iter()
                .map(|bank| ("SLC_ADAPTER_BANK", bank)),
        )
        .envs(options.edge_env.iter().map(|(k, v)| (k, v)))
        .stdout(log_target(&options.log_dir, "slc-detector")?)
        .stderr(log_target(&options.log_dir, "slc-detector.err")?);
    edge.spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// The cloud, `slc-reasoner serve`, on `port`, its large model at `llm_url`.
fn spawn_reasoner(
    options: &StackOptions,
    binary: &Path,
    port: u16,
    llm_url: &str,
    directory: &Path,
) -> Result<Child> {
    // The reasoner asks the edge's model by its served name: the checkpoint folder's.
    let model_name = options
        .model_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .context("the model directory has no name")?;
    Command::new(binary)
        .arg("serve")
        .env("SLC_REASONER_BIND", format!("127.0.0.1:{port}"))
        .env("SLC_LLM_BASE_URL", format!("{llm_url}/v1"))
        .env("SLC_LLM_MODEL", &model_name)
        // A turn's large-model calls wait behind the edge's own detection on small
        // machines: the reasoner's default per-attempt timeout suits a cloud model.
        .env("SLC_LLM_ATTEMPT_TIMEOUT_MS", "3600000")
        .env("SLC_LLM_CALL_DEADLINE_MS", "3600000")
        .env("SLC_LLM_API_KEY", REASONER_TO_LLM_KEY)
        .env("SLC_LLM_JSON_SCHEMA", options.llm_json_schema.to_string())
        .env(
            "SLC_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                directory.join("reasoner.db").display()
            ),
        )
        .env("SLC_REASONER_API_KEYS", EDGE_TO_REASONER_KEY)
        .envs(options.reasoner_env.iter().map(|(k, v)| (k, v)))
        .stdout(log_target(&options.log_dir, "slc-reasoner")?)
        .stderr(log_target(&options.log_dir, "slc-reasoner.err")?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// An HTTP client for the stack (plain HTTP on loopback; reqwest still wants a TLS provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_target(log_dir: &Option<PathBuf>, name: &str) -> Result<Stdio> {
    Ok(match log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Stdio::from(std::fs::File::create(dir.join(format!("{name}.log")))?)
        }
        None => Stdio::null(),
    })
}

impl Stack {
    /// Starts both services and waits until both are ready (models loaded and warm).
    pub async fn start(options: StackOptions) -> Result<Stack> {
        let directory = tempfile::tempdir()?;
        let (edge_port, reasoner_port) = (free_port()?, free_port()?);
        let edge_url = format!("http://127.0.0.1:{edge_port}");
        let reasoner_url = format!("http://127.0.0.1:{reasoner_port}");
        let to_reasoner = Recording::default();
        let to_large_model = Recording::default();
        // With recording, each service talks to a proxy in front of the other.
        let (edge_sees_reasoner_at, reasoner_sees_llm_at) = if options.record {
            (
                start_proxy(&reasoner_url, to_reasoner.clone()).await?,
                start_proxy(&edge_url, to_large_model.clone()).await?,
            )
        } else {
            (reasoner_url.clone(), edge_url.clone())
        };
        let reasoner_sees_llm_at = options.llm_url.clone().unwrap_or(reasoner_sees_llm_at);
        let detector_binary = options.bin_dir.join("slc-detector");
        let reasoner_binary = options.bin_dir.join("slc-reasoner");
        for binary in [&detector_binary, &reasoner_binary] {
            if !binary.exists() {
                bail!(
                    "{} is missing: build it first (`cargo build --bins`)",
                    binary.display()
                );
            }
        }
        let edge = spawn_edge(
            &options,
            &detector_binary,
            edge_port,
            &edge_sees_reasoner_at,
            directory.path(),
        )?;
        let reasoner = spawn_reasoner(
            &options,
            &reasoner_binary,
            reasoner_port,
            &reasoner_sees_llm_at,
            directory.path(),
        )?;
        let mut stack = Stack {
            edge_url,
            reasoner_url,
            to_reasoner,
            to_large_model,
            client: http_client(),
            edge,
            reasoner,
            _directory: directory,
        };
        let deadline = Instant::now() + options.ready_timeout;
        for url in [stack.edge_url.clone(), stack.reasoner_url.clone()] {
            stack.wait_ready(&url, deadline).await?;
        }
        Ok(stack)
    }

    /// Waits for `base`'s `/readyz`, stopping early if either service exits or reports a
    /// failed load.
    async fn wait_ready(&mut self, base: &str, deadline: Instant) -> Result<()> {
        let (edge, reasoner) = (&mut self.edge, &mut self.reasoner);
        wait_ready(&self.client, base, deadline, || {
            if let Some(status) = edge.try_wait()? {
                bail!("slc-detector exited early with {status}");
            }
            if let Some(status) = reasoner.try_wait()? {
                bail!("slc-reasoner exited early with {status}");
            }
            Ok(())
        })
        .await
    }

    /// The edge process's peak resident memory so far (VmHWM), in MiB.
    pub fn edge_peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.edge.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// An authorized request to the edge.
    pub fn edge(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.edge_url))
            .bearer_auth(APP_KEY)
    }

    /// Registers a concept from image files, as an app would (JSON with base64 images).
    pub async fn register(&self, id: &str, description: &str, images: &[PathBuf]) -> Result<()> {
        use base64::Engine as _;
        let images = images
            .iter()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))
                    .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let response = self
            .edge(reqwest::Method::POST, "/v1/concepts")
            .json(&serde_json::json!({"id": id, "description": description, "images": images}))
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "registering <{id}>: {} {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// Stops both services with SIGTERM and waits for them to exit.
    pub fn stop(mut self) -> Result<()> {
        for child in [&mut self.edge, &mut self.reasoner] {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (name, child) in [
            ("slc-detector", &mut self.edge),
            ("slc-reasoner", &mut self.reasoner),
        ] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("{name} exited with {status} on SIGTERM");
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("{name} did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A test that failed half-way must not leave servers behind.
        let _ = self.edge.kill();
        let _ = self.reasoner.kill();
        let _ = self.edge.wait();
        let _ = self.reasoner.wait();
    }
}

/// A concept of the sample database (`tests/fixtures/concepts/database.json`, the RAP
/// example database's format).
#[derive(Debug, Clone)]
pub struct SampleConcept {
    pub id: String,
    pub description: String,
    pub category: String,
    pub image: PathBuf,
}

pub fn sample_concepts() -> Result<Vec<SampleConcept>> {
    let folder = fixtures().join("concepts");
    let path = folder.join("database.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let database: serde_json::Value = serde_json::from_str(&text)?;
    let entries = database["concept_dict"]
        .as_object()
        .context("database.json has no concept_dict")?;
    entries
        .values()
        .map(|entry| {
            let field = |name: &str| -> Result<String> {
                entry[name]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{}: an entry has no {name}", path.display()))
            };
            Ok(SampleConcept {
                id: field("name")?,
                description: field("info")?,
                category: field("category")?,
                image: folder.join(field("image")?),
            })
        })
        .collect()
}

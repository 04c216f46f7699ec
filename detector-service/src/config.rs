//! The one clap configuration of the `slc-detector` binary. Every flag has an env var and a
//! default that works on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::detection::ConceptIsolation;

#[derive(Debug, Parser)]
#[command(name = "slc-detector", version, about = "The SLC edge service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The service and the engine's command-line tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeConfig>),
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// One completion from the local model, printed as JSON.
    Generate(crate::cli::generate::GenerateArgs),
    /// Write a random-weight checkpoint with the real Qwen2.5-VL-3B shapes.
    MakeCheckpoint(crate::cli::make_checkpoint::MakeCheckpointArgs),
    /// Time the engine on fixed inputs (driven by scripts/bench_engine.py).
    BenchEngine(crate::cli::bench::BenchArgs),
    /// Logits of bf16/int8/int4 against f32 on one checkpoint, teacher-forced over a real
    /// prompt: top-1 agreement, cosine similarity, max abs diff.
    BenchAccuracy(crate::cli::bench_accuracy::BenchAccuracyArgs),
    /// Load a checkpoint once: load time, the model's bytes and the peak resident memory.
    BenchLoad(crate::cli::bench_load::BenchLoadArgs),
    /// Offline meta-training: cluster training concepts and train one LoRA adapter per
    /// meta-concept into an adapter bank.
    MetaTrain(crate::cli::meta_train::MetaTrainArgs),
    /// Print CLIP embeddings of images and their pairwise cosines as JSON.
    Embed(crate::cli::embed::EmbedArgs),
    /// Print `{"cuda_available": bool}`: whether libtorch sees a GPU from this binary.
    DeviceInfo,
    /// Print a keys-file line (`SLC_KEYS_FILE`) for a tenant's key read from stdin, or for a
    /// fresh random key (printed first, on its own line, to hand to the tenant).
    HashKey(HashKeyArgs),
    /// Print the token ids of a text (or of a one-message chat) as a JSON array.
    Tokenize(crate::cli::tokenize::TokenizeArgs),
    /// Time llguidance on a tokenizer: trie build, cue-set grammar build and per-step masks.
    BenchGrammar(crate::cli::bench_grammar::BenchGrammarArgs),
    /// Preflight: validate a model (and bank, CLIP) from file headers and report the memory
    /// it needs; exits non-zero with one line per problem.
    Check(crate::cli::check::CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HashKeyArgs {
    /// The tenant the key acts for, or `@operator`.
    #[arg(long)]
    pub tenant: String,
    /// Make a random key instead of reading one from stdin.
    #[arg(long, default_value_t = false)]
    pub generate: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "SLC_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Hugging Face directory of the small VLM (Qwen2.5-VL).
    #[arg(
        long,
        env = "SLC_MODEL_DIR",
        default_value = "models/Qwen2.5-VL-3B-Instruct"
    )]
    pub model_dir: PathBuf,

    /// Directory of the meta-concept adapter bank (`dictionary.json` + PEFT adapters).
    /// Without it the base model runs without adapters.
    #[arg(long, env = "SLC_ADAPTER_BANK")]
    pub adapter_bank: Option<PathBuf>,

    /// Hugging Face directory of the CLIP vision model used for concept embeddings.
    #[arg(
        long,
        env = "SLC_CLIP_DIR",
        default_value = "models/clip-vit-large-patch14"
    )]
    pub clip_dir: PathBuf,

    /// Concept registry: `sqlite://FILE?mode=rwc` or `postgres://...`.
    #[arg(
        long,
        env = "SLC_DATABASE_URL",
        default_value = "sqlite://slc-detector.db?mode=rwc"
    )]
    pub database_url: String,

    /// Base URL of the cloud reasoner (`slc-reasoner serve`).
    #[arg(
        long,
        env = "SLC_REASONER_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub reasoner_url: String,

    /// Bearer key this edge presents to the reasoner.
    #[arg(long, env = "SLC_REASONER_API_KEY", hide_env_values = true)]
    pub reasoner_api_key: Option<String>,

    /// Seconds to wait for the reasoner before answering 504.
    #[arg(long, env = "SLC_REASONER_TIMEOUT_SECS", default_value_t = 120.0)]
    pub reasoner_timeout_secs: f64,

    /// Bearer keys accepted from clients, comma separated, each `tenant:key` (a key without
    /// `tenant:` belongs to the tenant `local`). Empty, with no keys file: no authentication,
    /// one local tenant.
    #[arg(
        long,
        env = "SLC_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// A file of hashed keys, one `tenant:SALT_HEX:SHA256_HEX` a line (`@operator` for an
    /// operator key; `slc-detector hash-key` prints lines). Re-read when it changes and on
    /// SIGHUP.
    #[arg(long, env = "SLC_KEYS_FILE")]
    pub keys_file: Option<std::path::PathBuf>,

    /// Operator keys, comma separated: manage tenants (`/v1/tenants`) and read `/metrics`,
    /// but own no concepts and read no tenant's photos (see `SLC_OPERATOR_READS_PHOTOS`).
    #[arg(
        long,
        env = "SLC_ADMIN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_keys: Vec<String>,

    /// Let operator keys export a tenant's data, photos included
    /// (`GET /v1/tenants/{id}/export`). Off: only the tenant's own key exports it.
    #[arg(long, env = "SLC_OPERATOR_READS_PHOTOS", default_value_t = false, action = clap::ArgAction::Set)]
    pub operator_reads_photos: bool,

    /// Most concepts one tenant holds (413 `concept_quota_exceeded` beyond it).
    #[arg(long, env = "SLC_TENANT_MAX_CONCEPTS", default_value_t = 100)]
    pub tenant_max_concepts: usize,

    /// Most conversations one tenant keeps (413 `conversation_quota_exceeded` beyond it).
    #[arg(long, env = "SLC_TENANT_MAX_CONVERSATIONS", default_value_t = 1000)]
    pub tenant_max_conversations: usize,

    /// Most bytes of reference photos one tenant stores, in MiB (413 `storage_quota_exceeded`).
    #[arg(long, env = "SLC_TENANT_MAX_STORED_MIB", default_value_t = 256)]
    pub tenant_max_stored_mib: u64,

    /// Requests a minute per tenant key (a burst of that many, then 429 with `Retry-After`);
    /// 0 turns it off. Keyless mode's one local user is not limited.
    #[arg(long, env = "SLC_TENANT_REQUESTS_PER_MINUTE", default_value_t = 120)]
    pub tenant_requests_per_minute: u32,

    /// Add a `tenant` label to the per-tenant request counter
    /// (`slc_detector_tenant_requests_total`); off by default to bound the metrics' cardinality.
    #[arg(long, env = "SLC_METRICS_TENANT_LABELS", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_tenant_labels: bool,

    /// Serve without `SLC_API_KEYS` on an address other machines can reach (refused otherwise).
    #[arg(long, env = "SLC_ALLOW_UNAUTHENTICATED", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_unauthenticated: bool,

    /// Bearer keys that may read `/metrics`, comma separated (Prometheus's scrape key). Empty:
    /// `/metrics` is open, like the probes.
    #[arg(
        long,
        env = "SLC_METRICS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub metrics_keys: Vec<String>,

    /// Requests waiting for the model beyond this many are refused with 429.
    #[arg(long, env = "SLC_QUEUE_SIZE", default_value_t = 16)]
    pub queue_size: usize,

    /// Model worker threads, each owning one copy of the model (default: one per GPU with
    /// `--device cuda`, each on its own GPU; else one).
    #[arg(long, env = "SLC_WORKERS")]
    pub workers: Option<usize>,

    /// Seconds a request may take in total (queue + model) before 504.
    #[arg(long, env = "SLC_REQUEST_DEADLINE_SECS", default_value_t = 300.0)]
    pub request_deadline_secs: f64,

    /// Largest decoded image, in pixels; checked from the header before decoding.
    #[arg(long, env = "SLC_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Largest request body in bytes (413 beyond it). The reasoner's default accepts this
    /// plus what the edge adds around the image (`shared_types::limits`).
    #[arg(long, env = "SLC_MAX_BODY_BYTES", default_value_t = shared_types::limits::EDGE_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Open connections at most; more wait in the listen backlog.
    #[arg(long, env = "SLC_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds a client may take to send a request head, and again its whole body; a slower
    /// one gets 408 (or its connection closed) before any work starts.
    #[arg(long, env = "SLC_READ_TIMEOUT_SECS", default_value_t = 30.0)]
    pub read_timeout_secs: f64,

    /// Most concepts in one detect/ask request.
    #[arg(long, env = "SLC_MAX_CONCEPTS_PER_REQUEST", default_value_t = 16)]
    pub max_concepts_per_request: usize,

    /// How many of a conversation's latest turns keep their concepts in scope: "And where is
    /// he now?" after a turn about `<bo>` is about `<bo>` (unless the request names concepts).
    #[arg(long, env = "SLC_CONVERSATION_SCOPE_TURNS", default_value_t = 3)]
    pub conversation_scope_turns: usize,

    /// Memory for decoded images alive at once, in MiB (each costs about 6 bytes a pixel while
    /// it decodes); a request that would go over gets 429 at once.
    #[arg(long, env = "SLC_DECODE_BUDGET_MIB", default_value_t = 1024)]
    pub decode_budget_mib: u64,

    /// Most concepts the registry holds; one more registration is 413 (`concept_quota_exceeded`).
    #[arg(long, env = "SLC_MAX_CONCEPTS", default_value_t = 1000)]
    pub max_concepts: usize,

    /// Most bytes of reference images the registry holds, in MiB; a write over it is 413
    /// (`storage_quota_exceeded`).
    #[arg(long, env = "SLC_MAX_STORED_MIB", default_value_t = 2048)]
    pub max_stored_mib: u64,

    /// Most reference images per concept.
    #[arg(long, env = "SLC_MAX_IMAGES_PER_CONCEPT", default_value_t = 10)]
    pub max_images_per_concept: usize,

    /// Most images in one `/v1/chat/completions` request (413 beyond it). A verification turn
    /// sends one; every image costs a vision-tower pass on the only worker.
    #[arg(long, env = "SLC_MAX_CHAT_IMAGES", default_value_t = 8)]
    pub max_chat_images: usize,

    /// Most new tokens for one cue set. The schema shortens location strings so that every
    /// cue set completes within it (64 characters each when there is room).
    #[arg(long, env = "SLC_DETECT_MAX_TOKENS", default_value_t = 2048)]
    pub detect_max_tokens: u32,

    /// `joint` (the paper's way: one Table 6 prompt and one Eq. 1 adapter for all of a turn's
    /// concepts) or `per-concept` (each concept detected on its own, and verified on its own:
    /// no concept's description or photos can change another's detection or verification).
    #[arg(long, env = "SLC_CONCEPT_ISOLATION", value_enum, default_value_t = ConceptIsolation::Joint)]
    pub concept_isolation: ConceptIsolation,

    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "SLC_DEVICE", default_value = "cpu")]
    pub device: String,

    /// `f32` or `bf16`. Unset: bf16 on CUDA (what the checkpoint is published in and what a
    /// GPU runs fast), f32 on CPU (where bf16 matmuls are slow).
    #[arg(long, env = "SLC_DTYPE")]
    pub dtype: Option<String>,

    /// `none` (default), `int8` or `int4`: the text decoder's linear layers and lm_head
    /// quantized at load time, bf16 activations, CPU only (see the README's "Edge speed").
    #[arg(long, env = "SLC_QUANT")]
    pub quant: Option<String>,

    /// Adapters mixed per turn (paper Eq. 1 with top-K): 1 takes the most similar meta-concept
    /// (the paper's best setting); K > 1 averages the K most similar adapters' LoRA weights.
    #[arg(long, env = "SLC_ADAPTER_TOP_K", default_value_t = 1)]
    pub adapter_top_k: usize,

    /// Fold the bank's single adapter into the base weights (a deployment with one fixed
    /// adapter) instead of applying adapters unmerged per request.
    #[arg(long, env = "SLC_MERGE_ADAPTER", default_value_t = false)]
    pub merge_adapter: bool,

    /// Vision-encoder cache per worker, in MiB (0 turns it off): a turn's image goes through
    /// the vision tower once for detection, verification and the answer.
    #[arg(long, env = "SLC_VISION_CACHE_MIB", default_value_t = 256)]
    pub vision_cache_mib: usize,

    /// Prefix KV cache per worker, in MiB (0 turns it off): prompts that share a prefix with a
    /// recent one (a fixed system prompt, the same image) prefill only what differs.
    #[arg(long, env = "SLC_PREFIX_CACHE_MIB", default_value_t = 512)]
    pub prefix_cache_mib: usize,

    /// Feed runs of schema-forced tokens in one forward pass (jump-forward).
    #[arg(long, env = "SLC_JUMP_FORWARD", default_value_t = true, action = clap::ArgAction::Set)]
    pub jump_forward: bool,

    /// CPU threads of libtorch's kernels (0: libtorch's default, one per core).
    #[arg(long, env = "SLC_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "SLC_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl ServeConfig {
    pub fn request_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.request_deadline_secs)
    }

    /// The client keys, without empty entries (`SLC_API_KEYS=` is no key, not an empty one).
    pub fn client_keys(&self) -> Vec<String> {
        non_empty(&self.api_keys)
    }

    pub fn scrape_keys(&self) -> Vec<String> {
        non_empty(&self.metrics_keys)
    }

    pub fn operator_keys(&self) -> Vec<String> {
        non_empty(&self.admin_keys)
    }

    /// The keys of every kind, hashed, with the keys file (`Err` when one does not parse).
    pub fn key_store(&self) -> Result<crate::tenants::keys::KeyStore, String> {
        crate::tenants::keys::KeyStore::new(
            &self.client_keys(),
            &self.operator_keys(),
            self.keys_file.clone(),
        )
    }

    /// Refuses an open bind without keys unless `SLC_ALLOW_UNAUTHENTICATED` says so.
    pub fn check_exposure(&self) -> Result<(), String> {
        slc_serve::refuse_open_bind(
            self.bind,
            !self.client_keys().is_empty() || self.keys_file.is_some(),
            self.allow_unauthenticated,
            "SLC_ALLOW_UNAUTHENTICATED",
        )
    }

    /// The connection cap and read deadlines of `slc_serve`.
    pub fn serve_limits(&self) -> (slc_serve::ServerLimits, slc_serve::BodyLimits) {
        slc_serve::limits(
            self.max_connections,
            self.max_body_bytes,
            self.read_timeout_secs,
        )
    }

    pub fn reasoner_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.reasoner_timeout_secs)
    }

    pub fn engine_options(&self) -> crate::engine_models::EngineOptions {
        crate::engine_models::EngineOptions {
            model_dir: self.model_dir.clone(),
            clip_dir: self.clip_dir.clone(),
            adapter_bank: self.adapter_bank.clone(),
            merge_adapter: self.merge_adapter,
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            quant: self.quant.clone(),
            vision_cache_bytes: self.vision_cache_mib * 1024 * 1024,
            prefix_cache_bytes: self.prefix_cache_mib * 1024 * 1024,
            jump_forward: self.jump_forward,
            fail_on_prompt: None,
        }
    }

    /// The laptop defaults, as `slc-detector serve` with no flags and no env would get them.
    pub fn defaults() -> Self {
        match Cli::parse_from(["slc-detector", "serve"]).command {
            Command::Serve(config) => *config,
            _ => unreachable!("parsed `serve`"),
        }
    }
}

fn non_empty(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|key| key.trim().to_string())
        .filter(|key| !key.is_empty())
        .collect()
}

#[cfg(test)]
mod dtype_tests {
    use super::ServeConfig;
    use clap::Parser;
    use slc_engine::device::parse_dtype;
    use tch::{Device, Kind};

    /// Unset, the dtype follows the device: a GPU user gets bf16 without asking, a laptop f32.
    #[test]
    fn serve_leaves_the_dtype_to_the_device_unless_told() {
        let options = ServeConfig::defaults().engine_options();
        assert_eq!(options.dtype, None);
        let default_on = |device| parse_dtype(options.dtype.as_deref(), device).unwrap();
        assert_eq!(default_on(Device::Cuda(0)), Kind::BFloat16);
        assert_eq!(default_on(Device::Cpu), Kind::Float);
        assert_eq!(
            parse_dtype(Some("f32"), Device::Cuda(0)).unwrap(),
            Kind::Float
        );
    }

    /// The help lists exactly what the parser takes: f16 is neither.
    #[test]
    fn the_dtype_help_matches_the_parser() {
        let help = super::Cli::try_parse_from(["slc-detector", "serve", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("`f32` or `bf16`"), "{help}");
        assert!(!help.contains("`f16`"), "{help}");
        let error = parse_dtype(Some("f16"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(error.contains("expected f32 or bf16"), "{error}");
    }
}

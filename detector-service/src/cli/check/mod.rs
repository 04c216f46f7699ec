//! `slc-detector check`: a preflight for users, from file headers alone (safetensors headers
//! and JSON; no tensor data is read), before minutes of loading fail or a wrong adapter runs:
//! - the model: config, every expected tensor's presence and shape across the shards, the
//!   index against the shards, the tokenizer (image and vision tokens, ids as the config says),
//!   the preprocessor against the vision tower;
//! - `--adapter-bank`: its dictionary, every adapter's config, targets (they exist in this
//!   model), ranks and factor shapes, the embeddings' length, and with `--clip` that the bank
//!   was made with that CLIP model;
//! - `--clip`: its config, weights' headers and preprocessor;
//! - the memory the weights need on `--device` in `--dtype`, and the KV cache per token.
//!
//! Every problem is one line in `problems`; any problem makes the command exit non-zero.

mod bank;
mod model;

use std::path::PathBuf;

use serde::Serialize;
use slc_engine::device::parse_dtype;
use tch::{Device, Kind};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Checkpoint directory in the Hugging Face layout.
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    /// CLIP checkpoint directory (the concept embedder).
    #[arg(long, env = "SLC_CLIP_DIR")]
    pub clip: Option<PathBuf>,
    /// Adapter bank directory (`dictionary.json` + PEFT adapters).
    #[arg(long, env = "SLC_ADAPTER_BANK")]
    pub adapter_bank: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where the model will run.
    #[arg(long, env = "SLC_DEVICE", default_value = "cpu")]
    pub device: String,
    /// f32 or bf16; bf16 on CUDA and f32 on CPU by default.
    #[arg(long, env = "SLC_DTYPE")]
    pub dtype: Option<String>,
}

/// Problems, notes and what was checked, gathered as the checks run.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub checked: Vec<String>,
}

/// At most this many lines of one kind of problem (a foreign adapter mismatches every layer).
const SAME_KIND_LIMIT: usize = 5;

impl Findings {
    pub fn problem(&mut self, line: String) {
        self.problems.push(line);
    }
    pub fn note(&mut self, line: String) {
        self.notes.push(line);
    }
    pub fn checked(&mut self, line: String) {
        self.checked.push(line);
    }
    /// The first few, then one line with how many more.
    pub fn problems_limited(&mut self, lines: impl Iterator<Item = String>) {
        let lines: Vec<String> = lines.collect();
        let more = lines.len().saturating_sub(SAME_KIND_LIMIT);
        self.problems
            .extend(lines.into_iter().take(SAME_KIND_LIMIT));
        if more > 0 {
            self.problems
                .push(format!("… and {more} more like the above"));
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MemoryNeed {
    pub device: String,
    pub dtype: String,
    pub model_weights_bytes: u64,
    pub adapters_bytes: u64,
    /// CLIP runs in f32.
    pub clip_bytes: u64,
    pub total_weights_bytes: u64,
    /// K and V of every text layer, per token of context (prompt plus output).
    pub kv_cache_bytes_per_token: u64,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    #[serde(flatten)]
    pub findings: Findings,
    pub memory: Option<MemoryNeed>,
}

pub fn run(args: &CheckArgs) -> CheckReport {
    let mut findings = Findings::default();
    let (device, kind) = device_and_dtype(args, &mut findings);
    let facts = model::check_model(&args.model, &mut findings);
    let clip = args
        .clip
        .as_deref()
        .and_then(|dir| bank::check_clip(dir, &mut findings));
    let adapters = args.adapter_bank.as_deref().map_or(0, |bank_dir| {
        bank::check_bank(
            bank_dir,
            clip.as_ref().map(|(id, _)| id),
            facts.as_ref().map(|f| &f.linears),
            &mut findings,
        )
    });
    let element = if kind == Kind::Float { 4 } else { 2 };
    let memory = facts.map(|facts| {
        let t = &facts.config.text;
        let model_weights_bytes = facts.numel * element;
        let adapters_bytes = adapters * element;
        let clip_bytes = clip.as_ref().map_or(0, |(_, numel)| numel * 4);
        let total = model_weights_bytes + adapters_bytes + clip_bytes;
        let kv = (2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim()) as u64 * element;
        MemoryNeed {
            summary: format!(
                "{:.2} GiB of weights on {device} in {} (model {:.2}, adapters {:.3}, CLIP {:.2}), \
                 plus {:.1} MiB of KV cache per 1,000 tokens of context and activations",
                gib(total),
                dtype_name(kind),
                gib(model_weights_bytes),
                gib(adapters_bytes),
                gib(clip_bytes),
                (kv * 1000) as f64 / (1u64 << 20) as f64
            ),
            device: device.clone(),
            dtype: dtype_name(kind).into(),
            model_weights_bytes,
            adapters_bytes,
            clip_bytes,
            total_weights_bytes: total,
            kv_cache_bytes_per_token: kv,
        }
    });
    CheckReport {
        ok: findings.problems.is_empty(),
        findings,
        memory,
    }
}

/// The device as asked (a missing GPU is a problem, the sizes are still reported for it).
fn device_and_dtype(args: &CheckArgs, findings: &mut Findings) -> (String, Kind) {
    let wanted = args.device.trim().to_ascii_lowercase();
    let cuda = wanted.starts_with("cuda") || wanted == "gpu";
    if let Err(e) = slc_engine::device::parse_device(&args.device) {
        findings.problem(format!("--device {}: {e}", args.device));
    }
    let nominal = if cuda { Device::Cuda(0) } else { Device::Cpu };
    let kind = parse_dtype(args.dtype.as_deref(), nominal).unwrap_or_else(|e| {
        findings.problem(format!("--dtype: {e}"));
        Kind::Float
    });
    (wanted, kind)
}

fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "f32",
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        _ => "other",
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

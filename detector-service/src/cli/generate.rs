//! `slc-detector generate`: one completion from the local model, printed as one JSON object.
//! The users' smoke tool and the parity entry point (`--logits-out` writes the first generated
//! position's f32 logits for comparison with transformers).

use anyhow::Context;
use slc_engine::chat::{ChatMessage, ContentPart};
use slc_engine::generation::SamplingParams;
use slc_engine::pipeline::VlmPipeline;
use slc_engine::preprocess::{DecodeLimits, PixelBudget};
use slc_engine::qwen2_5_vl::LoadOptions;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Checkpoint directory in the Hugging Face layout (config.json, safetensors, tokenizer.json).
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    /// Image files, in prompt order, placed before the prompt text.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// System prompt; the chat template's default ("You are a helpful assistant.") when absent.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, env = "SLC_MAX_NEW_TOKENS", default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Greedy decoding (the default when no temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k", "seed"])]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop strings (repeatable); the text is cut before the first.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Constrain the output to this JSON schema.
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
    #[arg(long, env = "SLC_DEVICE", default_value = "cpu")]
    pub device: String,
    /// f32 or bf16; bf16 on CUDA and f32 on CPU by default.
    #[arg(long, env = "SLC_DTYPE")]
    pub dtype: Option<String>,
    /// `none` (default), `int8` or `int4`: the text decoder's linear layers and lm_head
    /// quantized at load time, bf16 activations, CPU only (see the README's "Edge speed").
    #[arg(long, env = "SLC_QUANT")]
    pub quant: Option<String>,
    /// Write the first generated token's logits (f32, [vocab]) as `logits` in a safetensors file.
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// Threads for intra-op parallelism on CPU (0: libtorch's default).
    #[arg(long, env = "SLC_THREADS", default_value_t = 0)]
    pub threads: i32,
}

impl GenerateArgs {
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: if self.greedy {
                0.0
            } else {
                self.temperature.unwrap_or(0.0)
            },
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            seed: self.seed.unwrap_or(0),
            stop_token_ids: Vec::new(),
            stop_strings: self.stop.clone(),
            jump_forward: true,
        }
    }
}

/// Runs the command and returns the JSON it prints.
pub fn run(args: &GenerateArgs) -> anyhow::Result<serde_json::Value> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let options = LoadOptions::parse(&args.device, args.dtype.as_deref(), args.quant.as_deref())?;
    let pipeline = VlmPipeline::load(&args.model, options)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let images = args
        .images
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::system(system.clone()));
    }
    let mut content: Vec<ContentPart> = images.iter().map(|_| ContentPart::Image).collect();
    content.push(ContentPart::Text(args.prompt.clone()));
    messages.push(ChatMessage::user(content));
    let image_refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let prompt = pipeline.prepare(
        &messages,
        &image_refs,
        DecodeLimits::default(),
        PixelBudget::default(),
    )?;
    let params = args.sampling();
    let mut constraint = match &args.json_schema {
        Some(path) => Some(crate::cli::generate_constraint::json_schema_constraint(
            &pipeline, path,
        )?),
        None => None,
    };
    let output = pipeline.generate(
        &prompt,
        &params,
        constraint
            .as_mut()
            .map(|c| c.as_mut() as &mut dyn slc_engine::generation::TokenConstraint),
    )?;
    if let (Some(path), Some(logits)) = (&args.logits_out, &output.first_logits) {
        tch::Tensor::write_safetensors(&[("logits", logits)], path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(serde_json::json!({
        "text": output.text,
        "token_ids": output.token_ids,
        "finish_reason": output.finish_reason,
        "usage": output.usage,
        "timings": output.timings,
    }))
}

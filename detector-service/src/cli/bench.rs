//! `slc-detector bench-engine`: times our engine on fixed inputs (ids, pixel values, grids from
//! a safetensors file written by scripts/bench_engine.py, which runs transformers on the same
//! file and prints the side-by-side table). Not a test: a measurement.

use anyhow::Context;
use slc_engine::generation::{Decoding, GenerationInput, SamplingParams, generate};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::Tensor;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// safetensors with `input_ids` [len] i64, `pixel_values` [patches, patch_dim] f32, `grid` [n, 3].
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub dtype: Option<String>,
    /// `none` (default), `int8` or `int4`: the text decoder's linear layers and lm_head
    /// quantized at load time, bf16 activations, CPU only (see the README's "Edge speed").
    #[arg(long, env = "SLC_QUANT")]
    pub quant: Option<String>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    tch::set_num_threads(args.threads);
    let options = LoadOptions::parse(&args.device, args.dtype.as_deref(), args.quant.as_deref())?;
    let started = Instant::now();
    let model = Qwen25VlModel::load(&args.model, options)?;
    let load_s = started.elapsed().as_secs_f64();
    let inputs: HashMap<String, Tensor> = Tensor::read_safetensors(&args.inputs)
        .with_context(|| format!("reading {}", args.inputs.display()))?
        .into_iter()
        .collect();
    let ids: Vec<i64> = Vec::try_from(&inputs["input_ids"])?;
    let grid_flat: Vec<i64> = Vec::try_from(inputs["grid"].flatten(0, -1))?;
    let grids: Vec<[i64; 3]> = grid_flat.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    let pixels = inputs["pixel_values"].shallow_clone();
    let params = SamplingParams {
        max_new_tokens: args.new_tokens,
        ..SamplingParams::default()
    };
    let (mut vision, mut prefill, mut per_token) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = Vec::new();
    for rep in 0..args.warmup + args.reps {
        let input = GenerationInput {
            input_ids: &ids,
            pixel_values: Some(&pixels),
            image_embeds: None,
            grids: &grids,
        };
        let out = generate(
            &model,
            &input,
            &params,
            Decoding::default(),
            &mut model.new_cache(),
        )?;
        if rep >= args.warmup {
            vision.push(out.timings.vision_encode_ms);
            prefill.push(out.timings.prefill_ms);
            per_token.push(out.timings.decode_ms / out.usage.decode_steps.max(1) as f64);
            tokens = out.token_ids;
        }
    }
    Ok(serde_json::json!({
        "engine": "slc-engine (tch)",
        "load_s": load_s,
        "prompt_tokens": ids.len(),
        "vision_encode_ms": vision,
        "prefill_ms": prefill,
        "decode_ms_per_token": per_token,
        "tokens": tokens,
        "peak_rss_mib": super::bench_load::status_mib("VmHWM:"),
        "threads": tch::get_num_threads(),
        "quant": options.quant.name(),
        "weight_bytes_per_token": decode_weight_bytes(&model),
    }))
}

/// The weight bytes one decode step reads: every linear layer of the text decoder and the
/// `lm_head`, as stored (quantized or not); norms and biases are noise beside them, and the
/// embedding lookup reads one row.
pub fn decode_weight_bytes(model: &Qwen25VlModel) -> i64 {
    let mut total = 0;
    slc_engine::lora::targets::visit_linears(model, |path, linear| {
        if path.starts_with("model.language_model.") || path == "lm_head" {
            total += linear.weight.bytes();
        }
    });
    total
}

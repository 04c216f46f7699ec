//! `slc-detector bench-accuracy`: how far a quantized (or bf16) model's logits are from the
//! f32 model's on the same checkpoint. Teacher-forced over a real-tokenizer prompt: the first
//! `--prefill` positions in one prefill (the dequantize + GEMM path), the rest fed one token at
//! a time (the weight-only kernels), every position's logits compared with f32's: top-1
//! agreement, cosine similarity, max abs diff. Not a test: a measurement (issue 18).

use anyhow::{Context, bail};
use serde_json::{Value, json};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use slc_engine::tokenizer::QwenTokenizer;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// About 450 tokens of plain English on the project's own subject.
const PROMPT: &str = include_str!("bench_accuracy_prompt.txt");

#[derive(Debug, clap::Args)]
pub struct BenchAccuracyArgs {
    /// A checkpoint with a tokenizer (make-checkpoint --tokenizer).
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    /// Configurations compared with f32: `bf16`, `int8`, `int4`.
    #[arg(
        long,
        env = "SLC_BENCH_CONFIGS",
        value_delimiter = ',',
        default_value = "bf16,int8,int4"
    )]
    pub configs: Vec<String>,
    /// Positions compared (at most the prompt's tokens).
    #[arg(long, env = "SLC_BENCH_POSITIONS", default_value_t = 256)]
    pub positions: usize,
    /// Of those, how many run in the first prefill; the rest are fed one at a time.
    #[arg(long, env = "SLC_BENCH_PREFILL", default_value_t = 128)]
    pub prefill: usize,
    #[arg(long, env = "SLC_THREADS", default_value_t = 2)]
    pub threads: i32,
}

pub fn run(args: &BenchAccuracyArgs) -> anyhow::Result<Value> {
    tch::set_num_threads(args.threads);
    let tokenizer = QwenTokenizer::from_model_dir(&args.model)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let ids: Vec<i64> = tokenizer
        .encode_plain(PROMPT)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?
        .into_iter()
        .map(i64::from)
        .collect();
    if args.positions > ids.len() || args.prefill == 0 || args.prefill > args.positions {
        bail!(
            "need 0 < --prefill <= --positions <= {} (the prompt's tokens)",
            ids.len()
        );
    }
    let ids = &ids[..args.positions];
    let reference = teacher_forced(&args.model, "f32", ids, args.prefill)?;
    let mut results = Vec::new();
    for config in &args.configs {
        let logits = teacher_forced(&args.model, config, ids, args.prefill)?;
        results.push(json!({
            "config": config,
            "all": compare(&logits, &reference),
            "prefill_positions": compare(
                &logits.narrow(0, 0, args.prefill as i64),
                &reference.narrow(0, 0, args.prefill as i64),
            ),
            "decode_positions": compare(
                &logits.narrow(0, args.prefill as i64, (args.positions - args.prefill) as i64),
                &reference.narrow(0, args.prefill as i64, (args.positions - args.prefill) as i64),
            ),
        }));
    }
    Ok(json!({
        "model": args.model.display().to_string(),
        "positions": args.positions,
        "prefill": args.prefill,
        "threads": tch::get_num_threads(),
        "results": results,
    }))
}

/// Logits [ids.len(), vocab] in f32: `prefill` positions at once, then one at a time.
fn teacher_forced(
    model_dir: &std::path::Path,
    config: &str,
    ids: &[i64],
    prefill: usize,
) -> anyhow::Result<Tensor> {
    let options = match config {
        "f32" => LoadOptions::dense(Device::Cpu, Kind::Float),
        "bf16" => LoadOptions::dense(Device::Cpu, Kind::BFloat16),
        quant => LoadOptions::parse("cpu", None, Some(quant))?,
    };
    let model =
        Qwen25VlModel::load(model_dir, options).with_context(|| format!("loading as {config}"))?;
    let mut cache = model.new_cache();
    let first = model.prefill(&ids[..prefill], None, &[], &mut cache)?;
    let mut logits = vec![model.logits(&first)];
    for id in &ids[prefill..] {
        logits.push(model.logits(&model.forward_tokens(&[*id], &mut cache)?));
    }
    Ok(Tensor::cat(&logits, 0))
}

fn compare(logits: &Tensor, reference: &Tensor) -> Value {
    let agree = logits
        .argmax(-1, false)
        .eq_tensor(&reference.argmax(-1, false))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    let cosine = Tensor::cosine_similarity(logits, reference, -1, 1e-12);
    json!({
        "top1_agreement": agree,
        "cosine_mean": cosine.mean(Kind::Float).double_value(&[]),
        "cosine_min": cosine.min().double_value(&[]),
        "max_abs_diff": (logits - reference).abs().max().double_value(&[]),
        "reference_max_abs": reference.abs().max().double_value(&[]),
    })
}

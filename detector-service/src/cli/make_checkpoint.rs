//! `slc-detector make-checkpoint`: a random-weight checkpoint with the exact shapes of the
//! published Qwen2.5-VL-3B-Instruct, full depth or reduced, then loaded back through our loader
//! to prove it takes the real shapes. For benchmarks and the GPU script; never committed.

use anyhow::Context;
use slc_engine::qwen2_5_vl::random_checkpoint::{RandomCheckpointOptions, write_random_checkpoint};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind};

#[derive(Debug, clap::Args)]
pub struct MakeCheckpointArgs {
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Text decoder layers (36 in the real model).
    #[arg(long)]
    pub text_layers: Option<i64>,
    /// Vision blocks (32 in the real model).
    #[arg(long)]
    pub vision_layers: Option<i64>,
    /// Stored dtype: bf16 (as published) or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Skip loading the result back.
    #[arg(long)]
    pub no_verify: bool,
}

pub fn run(args: &MakeCheckpointArgs) -> anyhow::Result<serde_json::Value> {
    let dtype = slc_engine::device::parse_dtype(Some(&args.dtype), Device::Cpu)?;
    let options = RandomCheckpointOptions {
        text_layers: args.text_layers,
        vision_layers: args.vision_layers,
        dtype,
        seed: args.seed,
        ..RandomCheckpointOptions::default()
    };
    let started = Instant::now();
    write_random_checkpoint(&args.out, &options)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let write_s = started.elapsed().as_secs_f64();
    let mut report = serde_json::json!({"out": args.out, "write_s": write_s});
    if !args.no_verify {
        let started = Instant::now();
        let model = Qwen25VlModel::load(
            &args.out,
            LoadOptions {
                device: Device::Cpu,
                dtype: if dtype == Kind::BFloat16 {
                    Kind::BFloat16
                } else {
                    Kind::Float
                },
            },
        )?;
        report["load_s"] = started.elapsed().as_secs_f64().into();
        report["text_layers"] = model.language_model.layers.len().into();
        report["vision_blocks"] = model.visual.blocks.len().into();
    }
    Ok(report)
}

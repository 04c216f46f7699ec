//! `slc-detector make-checkpoint`: a random-weight checkpoint with the exact shapes of the
//! published Qwen2.5-VL-3B-Instruct, full depth or reduced, in the hub's layout (shards of at
//! most 4 GB plus the index, flat config, tied embeddings, preprocessor and generation configs,
//! and with `--tokenizer` the real tokenizer's files), then loaded back through our loader to
//! prove it takes the real shapes. For benchmarks and the GPU script; never committed.

use anyhow::Context;
use slc_engine::qwen2_5_vl::random_checkpoint::{RandomCheckpointOptions, write_random_checkpoint};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::path::{Path, PathBuf};
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
    /// A tokenizer directory (the real Qwen2.5-VL tokenizer `cargo xtask setup` writes to
    /// ~/.cache/slc/qwen2.5-vl-tokenizer) whose tokenizer.json, tokenizer_config.json and
    /// chat_template.json are copied in. Without it the checkpoint has no tokenizer.
    #[arg(long, env = "SLC_REAL_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    /// Largest shard in MiB (the hub's are about 4 GB, so the full 3B comes in two).
    #[arg(long, default_value_t = 4096)]
    pub shard_mib: i64,
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
        shard_bytes: args.shard_mib << 20,
    };
    let started = Instant::now();
    write_random_checkpoint(&args.out, &options)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(tokenizer) = &args.tokenizer {
        copy_tokenizer(tokenizer, &args.out)?;
    }
    let write_s = started.elapsed().as_secs_f64();
    let mut report = serde_json::json!({
        "out": args.out,
        "write_s": write_s,
        "tokenizer": args.tokenizer,
    });
    if !args.no_verify {
        let started = Instant::now();
        let model = Qwen25VlModel::load(
            &args.out,
            LoadOptions::dense(
                Device::Cpu,
                if dtype == Kind::BFloat16 {
                    Kind::BFloat16
                } else {
                    Kind::Float
                },
            ),
        )?;
        report["load_s"] = started.elapsed().as_secs_f64().into();
        report["text_layers"] = model.language_model.layers.len().into();
        report["vision_blocks"] = model.visual.blocks.len().into();
    }
    Ok(report)
}

/// The tokenizer's files, as the hub ships them beside the weights; tokenizer.json is required.
fn copy_tokenizer(from: &Path, to: &Path) -> anyhow::Result<()> {
    for (name, required) in [
        ("tokenizer.json", true),
        ("tokenizer_config.json", false),
        ("chat_template.json", false),
    ] {
        let source = from.join(name);
        if !source.exists() && !required {
            continue;
        }
        std::fs::copy(&source, to.join(name))
            .with_context(|| format!("copying the tokenizer's {}", source.display()))?;
    }
    Ok(())
}

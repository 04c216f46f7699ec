//! `slc-detector bench-load`: loads a checkpoint once and reports the load's wall time, the
//! model's bytes in the load dtype (from the shards' headers, not from our loader) and the
//! process's resident memory before and at its peak, then the time of a first forward pass (a
//! 56x56 image and a few tokens: every tensor of both towers is used once). transformers'
//! `from_pretrained` maps bf16 shards and reads them only in that first pass, so load plus first
//! pass is the fair sum. `scripts/bench_load.py` runs it beside transformers on the same
//! directory; a test holds the peak to the bound.

use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use slc_engine::safetensors_header::read_header;
use slc_engine::weights::safetensors_files;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Debug, clap::Args)]
pub struct BenchLoadArgs {
    /// Checkpoint directory.
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    #[arg(long, env = "SLC_DEVICE", default_value = "cpu")]
    pub device: String,
    /// bf16 or f32 (default: the device's, bf16 on CUDA).
    #[arg(long, env = "SLC_DTYPE")]
    pub dtype: Option<String>,
}

/// A line of /proc/self/status in MiB (`VmHWM`, the peak, or `VmRSS`, now).
pub fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The bytes every stored tensor takes once converted to `element` bytes per value.
fn model_bytes(dir: &Path, element: u64) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for file in safetensors_files(dir)? {
        let header = read_header(&file).map_err(anyhow::Error::msg)?;
        total += header.values().map(|t| t.numel() * element).sum::<u64>();
    }
    Ok(total)
}

pub fn run(args: &BenchLoadArgs) -> anyhow::Result<serde_json::Value> {
    let options = LoadOptions::parse(&args.device, args.dtype.as_deref(), None)?;
    let bytes = model_bytes(&args.model, options.dtype.elt_size_in_bytes() as u64)?;
    let rss_before_mib = status_mib("VmRSS:");
    let started = Instant::now();
    let model = Qwen25VlModel::load(&args.model, options)?;
    let load_s = started.elapsed().as_secs_f64();
    let model_mib = bytes as f64 / (1 << 20) as f64;
    let peak_rss_mib = status_mib("VmHWM:");
    let started = Instant::now();
    first_forward(&model)?;
    let first_forward_s = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "engine": "slc-engine (tch)",
        "dtype": format!("{:?}", model.kind()),
        "load_s": load_s,
        "model_mib": model_mib,
        "rss_before_mib": rss_before_mib,
        "peak_rss_mib": peak_rss_mib,
        "peak_over_model": peak_rss_mib / model_mib,
        "first_forward_s": first_forward_s,
        // Mapped weights are read in the first pass, so they count from there.
        "peak_rss_after_first_forward_mib": status_mib("VmHWM:"),
    }))
}

/// One image of 4x4 patches (4 image tokens after the merge) between the vision markers and
/// three text tokens, through both towers and the lm_head, as `scripts/bench_load.py` runs it.
fn first_forward(model: &Qwen25VlModel) -> anyhow::Result<()> {
    let config = &model.config;
    let grids = [[1, 4, 4]];
    let pixels = Tensor::zeros(
        [16, config.vision.patch_dim()],
        (Kind::Float, model.device()),
    );
    let embeds = model.encode_images(&pixels, &grids)?;
    let mut ids = vec![config.vision_start_token_id];
    ids.extend(std::iter::repeat_n(config.image_token_id, 4));
    ids.extend([config.vision_end_token_id, 1, 2, 3]);
    let hidden = model.prefill(&ids, Some(&embeds), &grids, &mut model.new_cache())?;
    model
        .logits(&hidden)
        .f_sum(Kind::Float)?
        .f_double_value(&[])?;
    Ok(())
}

//! Random-weight checkpoints with the exact shapes of the published Qwen2.5-VL-3B-Instruct
//! (`engine/configs/qwen2_5_vl_3b_config.json`), in full or with reduced depth, written in the
//! hub's layout (flat config, `model.layers.*`/`visual.*` keys, tied embeddings, shards plus
//! `model.safetensors.index.json`). For benchmarks and the GPU script; never committed.

use super::config::Qwen25VlConfig;
use super::shapes::checkpoint_tensors;
use crate::error::{EngineError, Result};
use serde_json::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The published config.json of Qwen2.5-VL-3B-Instruct.
pub const QWEN25_VL_3B_CONFIG: &str = include_str!("../../configs/qwen2_5_vl_3b_config.json");

#[derive(Debug, Clone)]
pub struct RandomCheckpointOptions {
    /// Text decoder layers; `None` keeps the config's 36.
    pub text_layers: Option<i64>,
    /// Vision blocks; `None` keeps the config's 32. Full-attention indexes past it are dropped.
    pub vision_layers: Option<i64>,
    pub dtype: Kind,
    pub seed: i64,
    /// Largest shard in bytes (the hub uses about 4 GB).
    pub shard_bytes: i64,
}

impl Default for RandomCheckpointOptions {
    fn default() -> Self {
        RandomCheckpointOptions {
            text_layers: None,
            vision_layers: None,
            dtype: Kind::BFloat16,
            seed: 0,
            shard_bytes: 4 << 30,
        }
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The 3B config with the depth overrides applied.
pub fn reduced_config(options: &RandomCheckpointOptions) -> Result<Value> {
    let mut config: Value = serde_json::from_str(QWEN25_VL_3B_CONFIG)
        .map_err(|e| EngineError::Config(e.to_string()))?;
    if let Some(layers) = options.text_layers {
        config["num_hidden_layers"] = layers.into();
    }
    if let Some(depth) = options.vision_layers {
        config["vision_config"]["depth"] = depth.into();
        let kept: Vec<i64> = config["vision_config"]["fullatt_block_indexes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_i64)
                    .filter(|&i| i < depth)
                    .collect()
            })
            .unwrap_or_default();
        config["vision_config"]["fullatt_block_indexes"] = kept.into();
    }
    config["torch_dtype"] = match options.dtype {
        Kind::BFloat16 => "bfloat16",
        _ => "float32",
    }
    .into();
    Ok(config)
}

/// The published preprocessor_config.json of Qwen2.5-VL-3B-Instruct (its pixel bounds are
/// `smart_resize`'s defaults: 4 to 16,384 patches of 28 px).
pub fn published_preprocessor_config() -> Value {
    serde_json::json!({
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor"
    })
}

/// Writes config.json, generation_config.json, preprocessor_config.json and sharded random
/// weights into `dir`.
pub fn write_random_checkpoint(dir: &Path, options: &RandomCheckpointOptions) -> Result<()> {
    let _guard = tch::no_grad_guard();
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let config_value = reduced_config(options)?;
    let config = Qwen25VlConfig::from_value(&config_value)?;
    let write_json = |name: &str, value: &Value| {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|e| io_error(&path, e))?;
        std::fs::write(&path, text + "\n").map_err(|e| io_error(&path, e))
    };
    write_json("config.json", &config_value)?;
    write_json(
        "generation_config.json",
        &serde_json::json!({
            "bos_token_id": 151643,
            "pad_token_id": 151643,
            "do_sample": false,
            "eos_token_id": [151645, 151643],
        }),
    )?;
    write_json("preprocessor_config.json", &published_preprocessor_config())?;
    tch::manual_seed(options.seed);
    let tensors = checkpoint_tensors(&config);
    let element = options.dtype.elt_size_in_bytes() as i64;
    // Group tensors into shards of at most `shard_bytes`.
    let mut shards: Vec<Vec<(String, Vec<i64>)>> = vec![Vec::new()];
    let mut current = 0i64;
    for (key, shape) in tensors {
        let bytes = shape.iter().product::<i64>() * element;
        if current > 0 && current + bytes > options.shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        current += bytes;
        shards
            .last_mut()
            .into_iter()
            .for_each(|s| s.push((key.clone(), shape.clone())));
    }
    let count = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0i64;
    for (index, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", index + 1);
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(shard.len());
        for (key, shape) in shard {
            let tensor = if key.ends_with("norm.weight")
                || key.ends_with("norm1.weight")
                || key.ends_with("norm2.weight")
                || key.ends_with("ln_q.weight")
            {
                Tensor::ones(&shape, (Kind::Float, Device::Cpu))
            } else {
                Tensor::randn(&shape, (Kind::Float, Device::Cpu)) * 0.02
            };
            total += tensor.numel() as i64 * element;
            weight_map.insert(key.clone(), file.clone().into());
            named.push((key, tensor.to_kind(options.dtype)));
        }
        let path = dir.join(&file);
        Tensor::write_safetensors(&named, &path).map_err(|e| io_error(&path, e))?;
    }
    write_json(
        "model.safetensors.index.json",
        &serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )
}

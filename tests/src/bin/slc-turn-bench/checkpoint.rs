//! `--make-checkpoint DIR`: a random-weight checkpoint with the real Qwen2.5-VL-3B widths.

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use slc_e2e::engine_fixtures;

use crate::BenchConfig;

/// A random checkpoint with the real 3B widths, the tiny tokenizer and Qwen's pixel bounds.
pub fn make_checkpoint(bin_dir: &Path, dir: &Path, config: &BenchConfig) -> Result<()> {
    if dir.join("config.json").exists() {
        return Ok(());
    }
    eprintln!(
        "== writing a 3B-width random checkpoint to {}",
        dir.display()
    );
    let status = std::process::Command::new(bin_dir.join("slc-detector"))
        .arg("make-checkpoint")
        .arg("--out")
        .arg(dir)
        .args(["--text-layers", &config.text_layers.to_string()])
        .args(["--vision-layers", &config.vision_layers.to_string()])
        .args(["--dtype", &config.checkpoint_dtype])
        .status()?;
    if !status.success() {
        bail!("slc-detector make-checkpoint failed");
    }
    let tiny = engine_fixtures().join("qwen25vl/untied");
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(tiny.join(file), dir.join(file))?;
    }
    let mut preprocessor: Value = serde_json::from_str(&std::fs::read_to_string(
        tiny.join("preprocessor_config.json"),
    )?)?;
    preprocessor["min_pixels"] = json!(3136);
    preprocessor["max_pixels"] = json!(12_845_056);
    std::fs::write(
        dir.join("preprocessor_config.json"),
        serde_json::to_string_pretty(&preprocessor)?,
    )?;
    // The token ids the model gives special meaning must be the tokenizer's.
    let tiny_config: Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("config.json"))?)?;
    let path = dir.join("config.json");
    let mut model_config: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    for key in [
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "bos_token_id",
        "eos_token_id",
    ] {
        if let Some(value) = tiny_config.get(key) {
            model_config[key] = value.clone();
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&model_config)?)?;
    std::fs::copy(
        tiny.join("generation_config.json"),
        dir.join("generation_config.json"),
    )?;
    Ok(())
}

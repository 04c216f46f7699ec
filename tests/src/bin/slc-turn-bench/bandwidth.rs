//! How close a naive decode step comes to this machine's memory bandwidth.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::median;
use crate::turns::Medians;

/// Bytes of the weights one decode step reads (everything but the vision tower) over the time
/// per naive detection step (one token per step), against this machine's copy bandwidth.
pub fn decode_bandwidth(model: &Path, medians: &Medians) -> Result<Value> {
    let weight_bytes = text_weight_bytes(model)?;
    let per_step_ms = median(
        medians
            .iter()
            .filter(|((_, name), _)| name == "naive")
            .map(|(_, figures)| figures["detect_decode_ms_per_step"]),
    );
    let copy = copy_bandwidth_gbps();
    let achieved = weight_bytes as f64 / (per_step_ms / 1000.0) / 1e9;
    Ok(json!({
        "weight_bytes_per_token": weight_bytes,
        "decode_ms_per_token": per_step_ms,
        "achieved_gbps": achieved,
        "copy_gbps": copy,
        "fraction_of_copy": achieved / copy,
    }))
}

/// Sizes of the language-model tensors from the safetensors headers.
fn text_weight_bytes(model: &Path) -> Result<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(model)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let header_len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + header_len])?;
        for (name, tensor) in header.as_object().context("safetensors header")? {
            if name == "__metadata__" || name.contains("visual.") {
                continue;
            }
            let offsets = &tensor["data_offsets"];
            total += offsets[1].as_u64().unwrap_or(0) - offsets[0].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// Median of a few copies of a 256 MiB buffer: read + write bytes per second, in GB/s.
fn copy_bandwidth_gbps() -> f64 {
    let source = vec![1u8; 256 << 20];
    let mut target = vec![0u8; 256 << 20];
    let rates = (0..5).map(|_| {
        let started = Instant::now();
        target.copy_from_slice(&source);
        std::hint::black_box(&target);
        2.0 * source.len() as f64 / started.elapsed().as_secs_f64() / 1e9
    });
    median(rates)
}

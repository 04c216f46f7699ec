//! Device and dtype selection from user-facing strings (`--device cuda --dtype bf16`).
//! bf16 is the default on CUDA, f32 on CPU, as the reference runs them.

use crate::error::{EngineError, Result};
use tch::{Device, Kind};

/// Parses `cpu`, `cuda` or `cuda:N`, and checks that a CUDA device is really there.
pub fn parse_device(text: &str) -> Result<Device> {
    let device = match text.trim().to_ascii_lowercase().as_str() {
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => Device::Cuda(index),
            _ => return Err(EngineError::UnknownDevice(text.to_string())),
        },
    };
    if let Device::Cuda(index) = device
        && (!tch::Cuda::is_available() || index as i64 >= tch::Cuda::device_count())
    {
        return Err(EngineError::DeviceUnavailable(text.to_string()));
    }
    Ok(device)
}

/// Parses `f32`/`float32` or `bf16`/`bfloat16`. `None` means the device's default.
pub fn parse_dtype(text: Option<&str>, device: Device) -> Result<Kind> {
    match text.map(|t| t.trim().to_ascii_lowercase()) {
        None => Ok(default_dtype(device)),
        Some(t) => match t.as_str() {
            "f32" | "float32" | "fp32" => Ok(Kind::Float),
            "bf16" | "bfloat16" => Ok(Kind::BFloat16),
            _ => Err(EngineError::UnknownDtype(
                text.unwrap_or_default().to_string(),
            )),
        },
    }
}

/// bf16 on CUDA (what the checkpoint is published in), f32 on CPU (where bf16 matmuls are slow).
pub fn default_dtype(device: Device) -> Kind {
    match device {
        Device::Cuda(_) => Kind::BFloat16,
        _ => Kind::Float,
    }
}

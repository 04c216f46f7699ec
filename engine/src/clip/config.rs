//! `CLIPVisionConfig` from a checkpoint's `config.json`: either a full `CLIPConfig`
//! (`model_type: "clip"`, the vision fields under `vision_config`, `projection_dim` at the top)
//! or a `CLIPVisionConfig` saved by `CLIPVisionModelWithProjection` (`projection_dim` inside).
//! Missing fields take the defaults of transformers 4.57.6
//! `src/transformers/models/clip/configuration_clip.py` (`CLIPVisionConfig`).

use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: i64,
    #[serde(default = "d_projection")]
    pub projection_dim: i64,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: i64,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "d_channels")]
    pub num_channels: i64,
    #[serde(default = "d_image_size")]
    pub image_size: i64,
    #[serde(default = "d_patch")]
    pub patch_size: i64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_hidden() -> i64 {
    768
}
fn d_intermediate() -> i64 {
    3072
}
fn d_projection() -> i64 {
    512
}
fn d_layers() -> i64 {
    12
}
fn d_heads() -> i64 {
    12
}
fn d_channels() -> i64 {
    3
}
fn d_image_size() -> i64 {
    224
}
fn d_patch() -> i64 {
    32
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EngineError::Config(e.to_string()))?;
        let mut vision = match value.get("vision_config") {
            Some(nested) => nested.clone(),
            None => value.clone(),
        };
        // CLIPConfig keeps projection_dim at the top level (default 512 there too).
        if let (Some(top), Some(object)) = (value.get("projection_dim"), vision.as_object_mut())
            && value.get("vision_config").is_some()
        {
            object.insert("projection_dim".into(), top.clone());
        }
        let config: Self = serde_json::from_value(vision)
            .map_err(|e| EngineError::Config(format!("CLIP config: {e}")))?;
        if config.num_attention_heads <= 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(EngineError::Config(
                "CLIP hidden_size must be a multiple of num_attention_heads".into(),
            ));
        }
        if config.patch_size <= 0 || config.image_size % config.patch_size != 0 {
            return Err(EngineError::Config(
                "CLIP image_size must be a multiple of patch_size".into(),
            ));
        }
        Ok(config)
    }
}

//! `config.json` of a Qwen2.5-VL checkpoint, read in every layout a user's download can have.
//! Mirrors transformers `models/qwen2_5_vl/configuration_qwen2_5_vl.py`
//! (`Qwen2_5_VLConfig`, `Qwen2_5_VLTextConfig`, `Qwen2_5_VLVisionConfig`).
//!
//! Layouts: the hub's flat config (text fields at the top, `rope_scaling.type = "mrope"`,
//! `vision_config.in_chans`), transformers 4.5x's nested `text_config` with `rope_scaling`, and
//! transformers 5's nested `text_config` with `rope_parameters`. They are resolved here, once.

use crate::error::{EngineError, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub max_position_embeddings: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Channels (in pairs) of the rotary half given to the temporal, height and width axes.
    pub mrope_section: Vec<i64>,
    pub hidden_act: String,
}

impl TextConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_heads: i64,
    pub in_channels: i64,
    pub patch_size: i64,
    pub temporal_patch_size: i64,
    pub spatial_merge_size: i64,
    pub window_size: i64,
    pub fullatt_block_indexes: Vec<i64>,
    pub out_hidden_size: i64,
    pub tokens_per_second: f64,
    pub hidden_act: String,
}

impl VisionConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_heads
    }
    /// Length of one flattened patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> i64 {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen25VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub tie_word_embeddings: bool,
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub vision_start_token_id: i64,
    pub vision_end_token_id: i64,
}

fn err(message: impl Into<String>) -> EngineError {
    EngineError::Config(message.into())
}

/// First of `keys` present in any of `sources`, in order.
fn lookup<'a>(sources: &[&'a Value], keys: &[&str]) -> Option<&'a Value> {
    sources
        .iter()
        .find_map(|source| keys.iter().find_map(|key| source.get(*key)))
        .filter(|value| !value.is_null())
}

fn int(sources: &[&Value], keys: &[&str], default: Option<i64>) -> Result<i64> {
    match lookup(sources, keys) {
        Some(v) => v
            .as_i64()
            .ok_or_else(|| err(format!("`{}` must be an integer", keys[0]))),
        None => default.ok_or_else(|| err(format!("missing `{}`", keys[0]))),
    }
}

fn float(sources: &[&Value], keys: &[&str], default: Option<f64>) -> Result<f64> {
    match lookup(sources, keys) {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| err(format!("`{}` must be a number", keys[0]))),
        None => default.ok_or_else(|| err(format!("missing `{}`", keys[0]))),
    }
}

fn int_list(value: &Value, name: &str) -> Result<Vec<i64>> {
    value
        .as_array()
        .and_then(|items| items.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| err(format!("`{name}` must be a list of integers")))
}

impl Qwen25VlConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| err(format!("{} is not JSON: {e}", path.display())))?;
        Self::from_value(&value)
    }

    pub fn from_value(root: &Value) -> Result<Self> {
        if !root.is_object() {
            return Err(err("expected a JSON object"));
        }
        // Nested text_config first (4.5x and 5.x), then the flat top level (hub).
        let text_sources: Vec<&Value> = match root.get("text_config") {
            Some(tc) if tc.is_object() => vec![tc, root],
            _ => vec![root],
        };
        let rope_sources: Vec<&Value> = text_sources
            .iter()
            .flat_map(|s| [s.get("rope_parameters"), s.get("rope_scaling")])
            .flatten()
            .filter(|v| v.is_object())
            .collect();
        let mrope_section = lookup(&rope_sources, &["mrope_section"])
            .ok_or_else(|| err("missing `rope_scaling.mrope_section` (or `rope_parameters`)"))
            .and_then(|v| int_list(v, "mrope_section"))?;
        let rope_theta = match lookup(&rope_sources, &["rope_theta"]) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| err("`rope_theta` must be a number"))?,
            None => float(&text_sources, &["rope_theta"], Some(1_000_000.0))?,
        };
        let rope_type = lookup(&rope_sources, &["rope_type", "type"])
            .and_then(Value::as_str)
            .unwrap_or("default");
        if !matches!(rope_type, "default" | "mrope") {
            return Err(err(format!("unsupported rope type `{rope_type}`")));
        }
        let num_attention_heads = int(&text_sources, &["num_attention_heads"], None)?;
        let text = TextConfig {
            vocab_size: int(&text_sources, &["vocab_size"], None)?,
            hidden_size: int(&text_sources, &["hidden_size"], None)?,
            intermediate_size: int(&text_sources, &["intermediate_size"], None)?,
            num_hidden_layers: int(&text_sources, &["num_hidden_layers"], None)?,
            num_attention_heads,
            num_key_value_heads: int(
                &text_sources,
                &["num_key_value_heads"],
                Some(num_attention_heads),
            )?,
            max_position_embeddings: int(&text_sources, &["max_position_embeddings"], Some(32768))?,
            rms_norm_eps: float(&text_sources, &["rms_norm_eps"], Some(1e-6))?,
            rope_theta,
            mrope_section,
            hidden_act: lookup(&text_sources, &["hidden_act"])
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_string(),
        };
        let vision_value = root
            .get("vision_config")
            .filter(|v| v.is_object())
            .ok_or_else(|| err("missing `vision_config`"))?;
        let vs = [vision_value];
        let vision = VisionConfig {
            depth: int(&vs, &["depth"], Some(32))?,
            hidden_size: int(&vs, &["hidden_size", "embed_dim"], Some(3584))?,
            intermediate_size: int(&vs, &["intermediate_size"], Some(3420))?,
            num_heads: int(&vs, &["num_heads"], Some(16))?,
            in_channels: int(&vs, &["in_channels", "in_chans"], Some(3))?,
            patch_size: int(&vs, &["patch_size", "spatial_patch_size"], Some(14))?,
            temporal_patch_size: int(&vs, &["temporal_patch_size"], Some(2))?,
            spatial_merge_size: int(&vs, &["spatial_merge_size"], Some(2))?,
            window_size: int(&vs, &["window_size"], Some(112))?,
            fullatt_block_indexes: match vision_value.get("fullatt_block_indexes") {
                Some(v) => int_list(v, "fullatt_block_indexes")?,
                None => vec![7, 15, 23, 31],
            },
            out_hidden_size: int(&vs, &["out_hidden_size"], Some(3584))?,
            tokens_per_second: float(&vs, &["tokens_per_second"], Some(4.0))?,
            hidden_act: lookup(&vs, &["hidden_act"])
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_string(),
        };
        // transformers reads `tie_word_embeddings` through the text config when it has one.
        let tie_word_embeddings = lookup(&text_sources, &["tie_word_embeddings"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let top = [root];
        let config = Qwen25VlConfig {
            text,
            vision,
            tie_word_embeddings,
            image_token_id: int(&top, &["image_token_id"], Some(151655))?,
            video_token_id: int(&top, &["video_token_id"], Some(151656))?,
            vision_start_token_id: int(&top, &["vision_start_token_id"], Some(151652))?,
            vision_end_token_id: int(&top, &["vision_end_token_id"], Some(151653))?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let t = &self.text;
        let v = &self.vision;
        let positive = [
            ("vocab_size", t.vocab_size),
            ("hidden_size", t.hidden_size),
            ("num_hidden_layers", t.num_hidden_layers),
            ("num_attention_heads", t.num_attention_heads),
            ("num_key_value_heads", t.num_key_value_heads),
            ("vision_config.depth", v.depth),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value <= 0) {
            return Err(err(format!("`{name}` must be positive")));
        }
        if t.hidden_size % t.num_attention_heads != 0
            || t.num_attention_heads % t.num_key_value_heads != 0
        {
            return Err(err(
                "hidden_size must divide into heads, and heads into key/value heads",
            ));
        }
        if t.mrope_section.len() != 3 || t.mrope_section.iter().sum::<i64>() * 2 != t.head_dim() {
            return Err(err(format!(
                "mrope_section {:?} must have 3 parts summing to head_dim / 2 = {}",
                t.mrope_section,
                t.head_dim() / 2
            )));
        }
        if v.hidden_size % v.num_heads != 0 || v.head_dim() % 4 != 0 {
            return Err(err("vision head_dim must be a multiple of 4"));
        }
        if v.out_hidden_size != t.hidden_size {
            return Err(err(format!(
                "vision out_hidden_size {} differs from text hidden_size {}",
                v.out_hidden_size, t.hidden_size
            )));
        }
        for act in [&t.hidden_act, &v.hidden_act] {
            if act != "silu" {
                return Err(err(format!("unsupported activation `{act}`")));
            }
        }
        Ok(())
    }
}

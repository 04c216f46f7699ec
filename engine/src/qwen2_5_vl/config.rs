//! `config.json` of a Qwen2.5-VL checkpoint, read through serde in every layout a user's
//! download can have. Mirrors transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/configuration_qwen2_5_vl.py` (`Qwen2_5_VLConfig`,
//! `Qwen2_5_VLTextConfig`, `Qwen2_5_VLVisionConfig`): the same names and, for every field that
//! may be absent, the same defaults. The text model's sizes have no default: a config without
//! them is broken, and transformers' 72B-sized defaults would only hide that.
//!
//! Layouts: the hub's flat config (text fields at the top, `rope_scaling.type = "mrope"`,
//! `vision_config.in_chans`), transformers 4.5x's nested `text_config` with `rope_scaling`, and
//! transformers 5's nested `text_config` with `rope_parameters` (transformers 5 is not in
//! `scripts/requirements.txt`: the `untied-v5` fixture's config is written in that layout by
//! `make_fixtures.py`'s `v5_config`). They are resolved here, once:
//! `text_config` is laid over the top level (the nested value wins, as transformers reads it),
//! the rotary fields come from `rope_parameters` or else `rope_scaling`, and an older spelling
//! of a vision field counts only where the current one is absent (the hub's config has both
//! `patch_size` and `spatial_patch_size`, a re-saved one both `in_channels` and `in_chans`, so
//! a serde alias would refuse them as duplicates). A `null` counts as absent.

use crate::error::{EngineError, Result};
use crate::nn::Activation;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
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
    pub hidden_act: Activation,
}

impl TextConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
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
    pub hidden_act: Activation,
}

/// `Qwen2_5_VLVisionConfig.__init__`'s defaults.
impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            depth: 32,
            hidden_size: 3584,
            intermediate_size: 3420,
            num_heads: 16,
            in_channels: 3,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 112,
            fullatt_block_indexes: vec![7, 15, 23, 31],
            out_hidden_size: 3584,
            tokens_per_second: 4.0,
            hidden_act: Activation::Silu,
        }
    }
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

/// (current name, older spelling) of vision fields, in the order transformers renamed them.
const VISION_SPELLINGS: [(&str, &str); 3] = [
    ("hidden_size", "embed_dim"),
    ("in_channels", "in_chans"),
    ("patch_size", "spatial_patch_size"),
];

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

/// The text fields after `text_config` is laid over the top level.
#[derive(Deserialize)]
struct TextSection {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    #[serde(default = "default_key_value_heads")]
    num_key_value_heads: i64,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: i64,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    #[serde(default)]
    hidden_act: Activation,
    #[serde(default)]
    tie_word_embeddings: bool,
    /// transformers 5.
    rope_parameters: Option<RopeSection>,
    /// transformers 4 and the hub.
    rope_scaling: Option<RopeSection>,
}

fn default_key_value_heads() -> i64 {
    8
}
fn default_max_position_embeddings() -> i64 {
    32768
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    1_000_000.0
}

#[derive(Deserialize)]
#[allow(
    dead_code,
    reason = "the rope type is never read: deserializing it is the check that it is supported"
)]
struct RopeSection {
    mrope_section: Option<Vec<i64>>,
    rope_theta: Option<f64>,
    rope_type: Option<RopeType>,
    /// The older key: the hub writes `"type": "mrope"`, 4.57 writes both.
    #[serde(rename = "type")]
    legacy_type: Option<RopeType>,
}

/// Qwen2.5-VL's M-RoPE is plain rotary per axis; transformers 4.57 rewrites the hub's `mrope`
/// to `default`. Scaled variants (yarn, dynamic, …) are not implemented.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RopeType {
    Default,
    Mrope,
}

#[derive(Deserialize)]
#[serde(default)]
struct SpecialTokenIds {
    image_token_id: i64,
    video_token_id: i64,
    vision_start_token_id: i64,
    vision_end_token_id: i64,
}

/// `Qwen2_5_VLConfig.__init__`'s defaults.
impl Default for SpecialTokenIds {
    fn default() -> Self {
        SpecialTokenIds {
            image_token_id: 151655,
            video_token_id: 151656,
            vision_start_token_id: 151652,
            vision_end_token_id: 151653,
        }
    }
}

fn err(message: impl Into<String>) -> EngineError {
    EngineError::Config(message.into())
}

/// `fields` without its `null`s, read as `T`; errors name the section and the field's path.
fn read_section<T: DeserializeOwned>(section: &str, mut fields: Map<String, Value>) -> Result<T> {
    fields.retain(|_, value| !value.is_null());
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        err(format!("{section}{at}: {}", e.into_inner()))
    })
}

impl TextSection {
    fn into_config(self) -> Result<TextConfig> {
        // The 5.x spelling first, then the 4.x one, field by field.
        let rope: Vec<&RopeSection> = [&self.rope_parameters, &self.rope_scaling]
            .into_iter()
            .flatten()
            .collect();
        let mrope_section = rope
            .iter()
            .find_map(|r| r.mrope_section.clone())
            .ok_or_else(|| err("missing `rope_scaling.mrope_section` (or `rope_parameters`)"))?;
        let rope_theta = rope
            .iter()
            .find_map(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or_else(default_rope_theta);
        Ok(TextConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            mrope_section,
            hidden_act: self.hidden_act,
        })
    }
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
        let root = root
            .as_object()
            .ok_or_else(|| err("expected a JSON object"))?;
        let mut text_fields = root.clone();
        if let Some(Value::Object(nested)) = root.get("text_config") {
            text_fields.extend(nested.clone());
        }
        let text: TextSection = read_section("text config", text_fields)?;
        let mut vision_fields = match root.get("vision_config") {
            Some(Value::Object(fields)) => fields.clone(),
            _ => return Err(err("missing `vision_config`")),
        };
        vision_fields.retain(|_, value| !value.is_null());
        for (current, older) in VISION_SPELLINGS {
            if let Some(value) = vision_fields.remove(older) {
                vision_fields.entry(current).or_insert(value);
            }
        }
        let vision: VisionConfig = read_section("vision_config", vision_fields)?;
        let ids: SpecialTokenIds = read_section("config", root.clone())?;
        let config = Qwen25VlConfig {
            tie_word_embeddings: text.tie_word_embeddings,
            text: text.into_config()?,
            vision,
            image_token_id: ids.image_token_id,
            video_token_id: ids.video_token_id,
            vision_start_token_id: ids.vision_start_token_id,
            vision_end_token_id: ids.vision_end_token_id,
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
        Ok(())
    }
}

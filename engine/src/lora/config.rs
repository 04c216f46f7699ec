//! `adapter_config.json` as HF PEFT 0.17.1 writes it for a LoRA adapter (`peft.LoraConfig`),
//! with the module matching rules of `peft.tuners.tuners_utils.check_target_module_exists` and
//! the per-module rank and alpha of `peft.utils.other.get_pattern_key`.
//!
//! Only what changes the forward pass of a plain LoRA is read. Options that would change it in
//! ways this engine does not implement (DoRA, trained biases, `fan_in_fan_out`, layer subsets)
//! are refused by `check_supported` rather than silently ignored.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// PEFT's `target_modules`: a list of module-name suffixes, or one regular expression that must
/// match the whole module name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    Pattern(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    pub r: i64,
    pub lora_alpha: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, i64>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
}

fn default_peft_type() -> String {
    "LORA".into()
}
fn default_bias() -> String {
    "none".into()
}

impl AdapterConfig {
    /// The config meta-training writes: plain LoRA on the given modules.
    pub fn new(r: i64, lora_alpha: f64, target_modules: TargetModules) -> Self {
        AdapterConfig {
            peft_type: default_peft_type(),
            r,
            lora_alpha,
            target_modules,
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            use_dora: false,
            bias: default_bias(),
            fan_in_fan_out: false,
            layers_to_transform: None,
            modules_to_save: None,
            lora_dropout: 0.0,
            base_model_name_or_path: None,
        }
    }

    /// Refuses options whose forward pass this engine does not implement.
    pub fn check_supported(&self) -> Result<(), String> {
        if !self.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(format!(
                "peft_type is `{}`, only LORA adapters are supported",
                self.peft_type
            ));
        }
        if self.r <= 0 {
            return Err(format!("rank r = {} must be positive", self.r));
        }
        if self.use_dora {
            return Err("DoRA adapters (use_dora: true) are not supported".into());
        }
        if self.bias != "none" {
            return Err(format!(
                "trained biases (bias: `{}`) are not supported",
                self.bias
            ));
        }
        if self.fan_in_fan_out {
            return Err(
                "fan_in_fan_out: true (Conv1D weights) does not fit Qwen2.5-VL's linear layers"
                    .into(),
            );
        }
        if self
            .layers_to_transform
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err("layers_to_transform is not supported".into());
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err("modules_to_save (fully trained extra modules) is not supported".into());
        }
        if let TargetModules::Pattern(pattern) = &self.target_modules {
            full_match_regex(pattern)?;
        }
        Ok(())
    }

    /// Whether PEFT would wrap the module at `path` (canonical module path, e.g.
    /// `model.language_model.layers.0.self_attn.q_proj`).
    pub fn targets(&self, path: &str) -> bool {
        match &self.target_modules {
            TargetModules::Names(names) => names.iter().any(|name| suffix_matches(path, name)),
            TargetModules::Pattern(pattern) => {
                full_match_regex(pattern).is_ok_and(|re| re.is_match(path))
            }
        }
    }

    /// The rank PEFT gives the module at `path`: `rank_pattern` first, then `r`.
    pub fn rank_for(&self, path: &str) -> i64 {
        pattern_value(&self.rank_pattern, path).unwrap_or(self.r)
    }

    /// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA, for the module at `path`.
    pub fn scale_for(&self, path: &str) -> f64 {
        let rank = self.rank_for(path) as f64;
        let alpha = pattern_value(&self.alpha_pattern, path).unwrap_or(self.lora_alpha);
        if self.use_rslora {
            alpha / rank.sqrt()
        } else {
            alpha / rank
        }
    }
}

/// PEFT's list rule: the module name equals the target or ends with `.target`.
fn suffix_matches(path: &str, name: &str) -> bool {
    path == name || path.ends_with(&format!(".{name}"))
}

fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        format!(
            "target_modules pattern `{pattern}` is not a regular expression this engine reads: {e}"
        )
    })
}

/// `get_pattern_key`: the first key that matches the end of `path` at a dot boundary.
fn pattern_value<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Option<T> {
    patterns.iter().find_map(|(key, value)| {
        let re = Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).ok()?;
        re.is_match(path).then_some(*value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: TargetModules) -> AdapterConfig {
        AdapterConfig::new(8, 16.0, targets)
    }

    #[test]
    fn list_targets_match_by_dotted_suffix_only() {
        let c = config(TargetModules::Names(vec!["q_proj".into(), "qkv".into()]));
        assert!(c.targets("model.language_model.layers.0.self_attn.q_proj"));
        assert!(c.targets("model.visual.blocks.3.attn.qkv"));
        assert!(!c.targets("model.language_model.layers.0.self_attn.k_proj"));
        assert!(!c.targets("model.visual.blocks.3.attn.xqkv"));
    }

    #[test]
    fn pattern_targets_match_the_whole_name() {
        let c = config(TargetModules::Pattern(
            r".*language_model.*\.(q_proj|v_proj)".into(),
        ));
        assert!(c.targets("model.language_model.layers.1.self_attn.v_proj"));
        assert!(!c.targets("model.visual.blocks.1.mlp.up_proj"));
        assert!(!c.targets("model.language_model.layers.1.self_attn.v_proj.extra"));
    }

    #[test]
    fn scale_follows_rslora_and_patterns() {
        let mut c = config(TargetModules::Names(vec!["q_proj".into()]));
        assert_eq!(c.scale_for("a.q_proj"), 2.0);
        c.use_rslora = true;
        assert!((c.scale_for("a.q_proj") - 16.0 / 8f64.sqrt()).abs() < 1e-12);
        c.use_rslora = false;
        c.rank_pattern.insert("layers.1.self_attn.q_proj".into(), 4);
        c.alpha_pattern
            .insert("layers.1.self_attn.q_proj".into(), 2.0);
        assert_eq!(c.rank_for("model.layers.1.self_attn.q_proj"), 4);
        assert_eq!(c.scale_for("model.layers.1.self_attn.q_proj"), 0.5);
        assert_eq!(c.rank_for("model.layers.11.self_attn.q_proj"), 8);
    }

    #[test]
    fn unsupported_options_are_refused() {
        let mut c = config(TargetModules::Names(vec!["q_proj".into()]));
        assert!(c.check_supported().is_ok());
        c.use_dora = true;
        assert!(c.check_supported().unwrap_err().contains("DoRA"));
        c.use_dora = false;
        c.r = 0;
        assert!(c.check_supported().is_err());
    }
}

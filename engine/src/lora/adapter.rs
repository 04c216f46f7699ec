//! A LoRA adapter as HF PEFT saves it (`save_pretrained`): `adapter_config.json` plus
//! `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` [r, in] and
//! `….lora_B.weight` [out, r]. Both key layouts of Qwen2.5-VL are read (transformers ≥ 4.52:
//! `model.language_model.layers.N…`, `model.visual.…`; older: `model.layers.N…`, `visual.…`)
//! and checked against the model it will run on, so a wrong rank or a target the model does
//! not have is an error at load time, not a silent no-op at request time.

use super::config::AdapterConfig;
use super::targets::{linear_shape, visit_linears};
use crate::error::{EngineError, Result};
use crate::qwen2_5_vl::Qwen25VlModel;
use crate::weights::canonical_key;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";

/// The low-rank factors of one module and the scale PEFT applies to their product.
pub struct LoraWeights {
    /// [rank, in_features]
    pub a: Tensor,
    /// [out_features, rank]
    pub b: Tensor,
    pub scale: f64,
}

impl LoraWeights {
    fn shallow_clone(&self) -> Self {
        LoraWeights {
            a: self.a.shallow_clone(),
            b: self.b.shallow_clone(),
            scale: self.scale,
        }
    }
}

/// An adapter checked against one model, its tensors on that model's device and in its dtype.
pub struct LoraAdapter {
    /// The directory it came from (for logs and errors).
    pub source: PathBuf,
    pub config: AdapterConfig,
    /// Keyed by canonical module path (`model.language_model.layers.0.self_attn.q_proj`).
    pub modules: BTreeMap<String, LoraWeights>,
}

pub(crate) fn adapter_error(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// `base_model.model.<module>.lora_A.weight` -> (canonical module path, is_a).
fn parse_key(key: &str) -> Option<(String, bool)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (module, is_a) = if let Some(module) = rest.strip_suffix(".lora_A.weight") {
        (module, true)
    } else {
        (rest.strip_suffix(".lora_B.weight")?, false)
    };
    Some((canonical_key(module), is_a))
}

impl LoraAdapter {
    /// Reads a PEFT adapter directory and checks it against `model`.
    pub fn load(dir: &Path, model: &Qwen25VlModel) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            adapter_error(&config_path, format!("cannot read the adapter config: {e}"))
        })?;
        let config: AdapterConfig = serde_json::from_str(&text)
            .map_err(|e| adapter_error(&config_path, format!("not a PEFT LoRA config: {e}")))?;
        config
            .check_supported()
            .map_err(|m| adapter_error(&config_path, m))?;

        let weights_path = dir.join(WEIGHTS_FILE);
        if !weights_path.exists() {
            return Err(adapter_error(dir, format!("{WEIGHTS_FILE} is missing")));
        }
        let tensors = Tensor::read_safetensors(&weights_path)
            .map_err(|e| adapter_error(&weights_path, format!("not a safetensors file: {e}")))?;
        let mut factors: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for (key, tensor) in tensors {
            let (module, is_a) = parse_key(&key).ok_or_else(|| {
                adapter_error(
                    &weights_path,
                    format!("unexpected key `{key}` (expected base_model.model.<module>.lora_A/lora_B.weight)"),
                )
            })?;
            let slot = factors.entry(module).or_default();
            if is_a {
                slot.0 = Some(tensor)
            } else {
                slot.1 = Some(tensor)
            }
        }
        let mut pairs = BTreeMap::new();
        for (module, (a, b)) in factors {
            match (a, b) {
                (Some(a), Some(b)) => {
                    pairs.insert(module, (a, b));
                }
                _ => {
                    return Err(adapter_error(
                        &weights_path,
                        format!("`{module}` has only one of lora_A and lora_B"),
                    ));
                }
            }
        }
        Self::from_factors(dir, config, pairs, model)
    }

    /// Checks `factors` (module path -> (A, B)) against `config` and `model`, and moves them to
    /// the model's device and dtype.
    pub fn from_factors(
        source: &Path,
        config: AdapterConfig,
        factors: BTreeMap<String, (Tensor, Tensor)>,
        model: &Qwen25VlModel,
    ) -> Result<Self> {
        let mut shapes: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        visit_linears(model, |path, linear| {
            shapes.insert(path.to_string(), linear_shape(linear));
        });
        if factors.is_empty() {
            return Err(adapter_error(source, "the adapter has no LoRA weights"));
        }
        check_coverage(source, &config, &shapes, &factors)?;
        let device = model.device();
        let mut modules = BTreeMap::new();
        for (path, (a, b)) in factors {
            let Some(&(in_features, out_features)) = shapes.get(&path) else {
                return Err(adapter_error(
                    source,
                    format!(
                        "the adapter targets `{path}`, which this model does not have (or which is not a linear layer)"
                    ),
                ));
            };
            if !config.targets(&path) {
                return Err(adapter_error(
                    source,
                    format!("weights for `{path}`, which target_modules does not select"),
                ));
            }
            let rank = config.rank_for(&path);
            if a.size() != [rank, in_features] || b.size() != [out_features, rank] {
                return Err(adapter_error(
                    source,
                    format!(
                        "`{path}`: lora_A {:?} and lora_B {:?} do not fit rank {rank} and the layer's \
                         [in {in_features}, out {out_features}] (expected A [{rank}, {in_features}], B [{out_features}, {rank}])",
                        a.size(),
                        b.size()
                    ),
                ));
            }
            let scale = config.scale_for(&path);
            // f32 factors on any model dtype, as PEFT keeps them (`autocast_adapter_dtype`), so
            // the delta, merging and top-K averaging never see bf16-rounded factors.
            let to_model = |t: Tensor| t.to_device(device).to_kind(Kind::Float).contiguous();
            modules.insert(
                path,
                LoraWeights {
                    a: to_model(a),
                    b: to_model(b),
                    scale,
                },
            );
        }
        Ok(LoraAdapter {
            source: source.to_path_buf(),
            config,
            modules,
        })
    }

    /// The mean of several adapters' A and B factors, module by module (top-K mixing, as the SLC
    /// authors' code averages LoRA weights). They must have the same modules and ranks.
    pub fn average(adapters: &[&LoraAdapter]) -> Result<LoraAdapter> {
        let first = adapters
            .first()
            .ok_or_else(|| EngineError::InvalidInput("no adapters to average".into()))?;
        if adapters.len() == 1 {
            return Ok(first.shallow_clone());
        }
        let mut modules = BTreeMap::new();
        for (path, weights) in &first.modules {
            // Fresh sums: `to_kind` to the same dtype returns the tensor itself, and adding in
            // place into it would change the first adapter's factors for every later use.
            let mut a = weights.a.copy();
            let mut b = weights.b.copy();
            for other in &adapters[1..] {
                let theirs = other.modules.get(path).filter(|w| {
                    w.a.size() == weights.a.size()
                        && w.b.size() == weights.b.size()
                        && w.scale == weights.scale
                });
                let Some(theirs) = theirs else {
                    return Err(adapter_error(
                        &other.source,
                        format!(
                            "cannot average with {}: `{path}` differs in presence, rank or scale",
                            first.source.display()
                        ),
                    ));
                };
                a += &theirs.a;
                b += &theirs.b;
            }
            let n = adapters.len() as f64;
            modules.insert(
                path.clone(),
                LoraWeights {
                    a: a / n,
                    b: b / n,
                    scale: weights.scale,
                },
            );
        }
        if adapters
            .iter()
            .any(|other| other.modules.len() != first.modules.len())
        {
            return Err(adapter_error(
                &first.source,
                "cannot average adapters with different target modules",
            ));
        }
        Ok(LoraAdapter {
            source: first.source.clone(),
            config: first.config.clone(),
            modules,
        })
    }

    pub fn shallow_clone(&self) -> LoraAdapter {
        LoraAdapter {
            source: self.source.clone(),
            config: self.config.clone(),
            modules: self
                .modules
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect(),
        }
    }

    /// Whether it changes the vision tower (any target under `model.visual.`).
    pub fn targets_vision(&self) -> bool {
        self.modules
            .keys()
            .any(|path| path.starts_with("model.visual."))
    }

    /// Bytes its factors occupy, for a cache bounded by bytes.
    pub fn size_bytes(&self) -> usize {
        self.modules
            .values()
            .map(|w| {
                w.a.numel() * w.a.kind().elt_size_in_bytes()
                    + w.b.numel() * w.b.kind().elt_size_in_bytes()
            })
            .sum()
    }

    pub fn device(&self) -> Device {
        self.modules
            .values()
            .next()
            .map(|w| w.a.device())
            .unwrap_or(Device::Cpu)
    }
}

/// Every module `target_modules` names exists in the model (`shapes`, by module path), and
/// every module it selects has factors.
fn check_coverage(
    source: &Path,
    config: &AdapterConfig,
    shapes: &BTreeMap<String, (i64, i64)>,
    factors: &BTreeMap<String, (Tensor, Tensor)>,
) -> Result<()> {
    if let super::config::TargetModules::Names(names) = &config.target_modules
        && let Some(missing) = names.iter().find(|name| {
            !shapes
                .keys()
                .any(|path| path == *name || path.ends_with(&format!(".{name}")))
        })
    {
        return Err(adapter_error(
            source,
            format!("target module `{missing}` does not exist in this Qwen2.5-VL model"),
        ));
    }
    for path in shapes.keys().filter(|p| config.targets(p)) {
        if !factors.contains_key(path) {
            return Err(adapter_error(
                source,
                format!("target_modules selects `{path}` but the adapter has no weights for it"),
            ));
        }
    }
    Ok(())
}

/// Writes factors (canonical module path -> (A, B)) as a PEFT adapter directory, in the key
/// layout PEFT 0.17 with transformers 4.57 writes (`base_model.model.model.language_model.…`).
/// Tensors are saved in f32 on CPU.
pub fn save_peft_adapter(
    dir: &Path,
    config: &AdapterConfig,
    factors: &BTreeMap<String, (Tensor, Tensor)>,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| adapter_error(dir, format!("cannot create the directory: {e}")))?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (path, (a, b)) in factors {
        let to_file = |t: &Tensor| {
            t.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
        };
        named.push((format!("{KEY_PREFIX}{path}.lora_A.weight"), to_file(a)));
        named.push((format!("{KEY_PREFIX}{path}.lora_B.weight"), to_file(b)));
    }
    // Write to temporary names and rename, so a crash never leaves a half-written adapter.
    let weights_tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    Tensor::write_safetensors(&named, &weights_tmp)?;
    let config_tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let json =
        serde_json::to_string_pretty(config).map_err(|e| adapter_error(dir, e.to_string()))?;
    std::fs::write(&config_tmp, json + "\n")
        .map_err(|e| adapter_error(&config_tmp, e.to_string()))?;
    std::fs::rename(&weights_tmp, dir.join(WEIGHTS_FILE))
        .map_err(|e| adapter_error(dir, e.to_string()))?;
    std::fs::rename(&config_tmp, dir.join(CONFIG_FILE))
        .map_err(|e| adapter_error(dir, e.to_string()))?;
    Ok(())
}

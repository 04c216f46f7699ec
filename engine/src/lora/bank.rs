//! The adapter bank: the K meta-concepts that meta-training produced, each a CLIP embedding and
//! a PEFT LoRA adapter, listed in `dictionary.json`. The detector loads every adapter onto the
//! model's device at start, warms each once, and per turn picks one (or averages the top K) by
//! Eq. 1 of the SLC paper.
//!
//! `dictionary.json`:
//! ```json
//! { "format": "slc-adapter-bank/1",
//!   "clip_model": { "name": "clip-vit-large-patch14", "embedding_dim": 768 },
//!   "embeddings_file": "embeddings.safetensors",
//!   "meta_concepts": [
//!     { "name": "<mam>", "adapter": "adapters/mam", "embedding": [0.01, …] },
//!     { "name": "<bo>",  "adapter": "adapters/bo",  "embedding_key": "<bo>" } ] }
//! ```
//! Each meta-concept has its embedding inline or under `embedding_key` in `embeddings_file`
//! (a safetensors file of 1-D f32 tensors). Paths are relative to the bank directory.

use super::adapter::{LoraAdapter, adapter_error};
use super::apply::{attach_adapter, detach_adapters};
use super::selection::{AdapterChoice, choose_adapters, scenario_embedding};
use crate::error::{EngineError, Result};
use crate::qwen2_5_vl::Qwen25VlModel;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const DICTIONARY_FILE: &str = "dictionary.json";
pub const BANK_FORMAT: &str = "slc-adapter-bank/1";

/// Which CLIP model made the embeddings. Embeddings of different CLIP models live in different
/// spaces, so a bank made with one is meaningless with another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipModelId {
    /// The CLIP checkpoint directory's name, e.g. `clip-vit-large-patch14`.
    pub name: String,
    /// `projection_dim` of that model: the length of its image embeddings.
    pub embedding_dim: i64,
}

impl ClipModelId {
    /// The identity of a CLIP checkpoint directory as published (`config.json` with
    /// `projection_dim` at the top or under `vision_config`).
    pub fn from_clip_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        let embedding_dim = config
            .get("projection_dim")
            .or_else(|| {
                config
                    .get("vision_config")
                    .and_then(|v| v.get("projection_dim"))
            })
            .and_then(|v| v.as_i64())
            .ok_or_else(|| EngineError::Config(format!("{}: no projection_dim", path.display())))?;
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let name = canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ClipModelId {
            name,
            embedding_dim,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaConceptEntry {
    pub name: String,
    /// The adapter directory, relative to the bank.
    pub adapter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankDictionary {
    pub format: String,
    pub clip_model: ClipModelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings_file: Option<String>,
    pub meta_concepts: Vec<MetaConceptEntry>,
}

impl BankDictionary {
    pub fn read(bank_dir: &Path) -> Result<Self> {
        let path = bank_dir.join(DICTIONARY_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| adapter_error(&path, format!("cannot read the bank dictionary: {e}")))?;
        let dictionary: BankDictionary = serde_json::from_str(&text)
            .map_err(|e| adapter_error(&path, format!("not a bank dictionary: {e}")))?;
        if dictionary.format != BANK_FORMAT {
            return Err(adapter_error(
                &path,
                format!(
                    "format is `{}`, this engine reads `{BANK_FORMAT}`",
                    dictionary.format
                ),
            ));
        }
        Ok(dictionary)
    }

    pub fn write(&self, bank_dir: &Path) -> Result<()> {
        let path = bank_dir.join(DICTIONARY_FILE);
        let json =
            serde_json::to_string_pretty(self).map_err(|e| adapter_error(&path, e.to_string()))?;
        let tmp = bank_dir.join(format!("{DICTIONARY_FILE}.tmp"));
        std::fs::write(&tmp, json + "\n").map_err(|e| adapter_error(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| adapter_error(&path, e.to_string()))
    }

    /// Every meta-concept's embedding, inline or from `embeddings_file`, checked for length.
    pub fn embeddings(&self, bank_dir: &Path) -> Result<Vec<Vec<f32>>> {
        let path = bank_dir.join(DICTIONARY_FILE);
        let file_tensors = match &self.embeddings_file {
            None => Vec::new(),
            Some(file) => {
                let file_path = bank_dir.join(file);
                Tensor::read_safetensors(&file_path).map_err(|e| {
                    adapter_error(&file_path, format!("cannot read the embeddings: {e}"))
                })?
            }
        };
        let mut out = Vec::with_capacity(self.meta_concepts.len());
        for entry in &self.meta_concepts {
            let embedding = match (&entry.embedding, &entry.embedding_key) {
                (Some(values), None) => values.clone(),
                (None, Some(key)) => {
                    let (_, tensor) = file_tensors.iter().find(|(k, _)| k == key).ok_or_else(|| {
                        adapter_error(
                            &path,
                            format!("meta-concept `{}`: embedding `{key}` is not in embeddings_file", entry.name),
                        )
                    })?;
                    Vec::<f32>::try_from(tensor.to_kind(Kind::Float).flatten(0, -1))?
                }
                _ => {
                    return Err(adapter_error(
                        &path,
                        format!(
                            "meta-concept `{}` needs exactly one of embedding and embedding_key",
                            entry.name
                        ),
                    ));
                }
            };
            if embedding.len() as i64 != self.clip_model.embedding_dim {
                return Err(adapter_error(
                    &path,
                    format!(
                        "meta-concept `{}`: embedding has {} values, the CLIP model `{}` makes {}",
                        entry.name,
                        embedding.len(),
                        self.clip_model.name,
                        self.clip_model.embedding_dim
                    ),
                ));
            }
            out.push(embedding);
        }
        Ok(out)
    }
}

/// One meta-concept, loaded.
pub struct MetaConcept {
    pub name: String,
    pub embedding: Vec<f32>,
    pub adapter: LoraAdapter,
}

/// The adapters to run a turn with and why.
pub struct BankSelection {
    /// Best first; `choices[0]` alone unless top-K mixing was asked for.
    pub choices: Vec<AdapterChoice>,
    /// The meta-concept names of `choices`, in the same order.
    pub names: Vec<String>,
    /// The chosen adapter, or the average of the top K.
    pub adapter: LoraAdapter,
}

pub struct AdapterBank {
    pub directory: PathBuf,
    pub clip_model: ClipModelId,
    pub meta_concepts: Vec<MetaConcept>,
}

impl AdapterBank {
    /// Loads a bank for `model`, refusing it when it was made with another CLIP model than
    /// `clip_model`, names a missing adapter, or holds adapters or embeddings of the wrong shape.
    /// Every adapter is moved to the model's device and run once (warm-up).
    pub fn load(
        bank_dir: &Path,
        model: &mut Qwen25VlModel,
        clip_model: &ClipModelId,
    ) -> Result<Self> {
        let dictionary = BankDictionary::read(bank_dir)?;
        let path = bank_dir.join(DICTIONARY_FILE);
        if dictionary.clip_model != *clip_model {
            return Err(adapter_error(
                &path,
                format!(
                    "the bank was made with CLIP `{}` ({}-d embeddings) but the detector runs `{}` ({}-d): \
                     its embeddings are not comparable; use the CLIP model the bank was made with",
                    dictionary.clip_model.name,
                    dictionary.clip_model.embedding_dim,
                    clip_model.name,
                    clip_model.embedding_dim
                ),
            ));
        }
        if dictionary.meta_concepts.is_empty() {
            return Err(adapter_error(&path, "the bank lists no meta-concepts"));
        }
        let embeddings = dictionary.embeddings(bank_dir)?;
        let mut meta_concepts = Vec::with_capacity(embeddings.len());
        for (entry, embedding) in dictionary.meta_concepts.iter().zip(embeddings) {
            let adapter_dir = bank_dir.join(&entry.adapter);
            if !adapter_dir.is_dir() {
                return Err(adapter_error(
                    &path,
                    format!(
                        "meta-concept `{}`: adapter directory {} is missing",
                        entry.name,
                        adapter_dir.display()
                    ),
                ));
            }
            let adapter = LoraAdapter::load(&adapter_dir, model)?;
            warm_up(model, &adapter)?;
            meta_concepts.push(MetaConcept {
                name: entry.name.clone(),
                embedding,
                adapter,
            });
        }
        detach_adapters(model);
        Ok(AdapterBank {
            directory: bank_dir.to_path_buf(),
            clip_model: dictionary.clip_model,
            meta_concepts,
        })
    }

    /// Eq. 1: the adapter for a turn whose concepts have these embeddings (each the mean of
    /// its reference images' normalised CLIP embeddings). `top_k > 1` averages the top K.
    pub fn select(&self, concept_embeddings: &[Vec<f32>], top_k: usize) -> Result<BankSelection> {
        let scenario = scenario_embedding(concept_embeddings)?;
        let meta: Vec<Vec<f32>> = self
            .meta_concepts
            .iter()
            .map(|m| m.embedding.clone())
            .collect();
        let choices = choose_adapters(&scenario, &meta, top_k)?;
        let adapters: Vec<&LoraAdapter> = choices
            .iter()
            .map(|c| &self.meta_concepts[c.index].adapter)
            .collect();
        let adapter = LoraAdapter::average(&adapters)?;
        let names = choices
            .iter()
            .map(|c| self.meta_concepts[c.index].name.clone())
            .collect();
        Ok(BankSelection {
            choices,
            names,
            adapter,
        })
    }
}

/// Runs a tiny image-and-text prompt with `adapter` attached, so its tensors are resident and
/// any kernel set-up happens at start rather than in the first request.
fn warm_up(model: &mut Qwen25VlModel, adapter: &LoraAdapter) -> Result<()> {
    attach_adapter(model, adapter);
    let vision = &model.config.vision;
    let merge = vision.spatial_merge_size;
    let grid = [1, merge, merge];
    let pixels = Tensor::zeros(
        [merge * merge, vision.patch_dim()],
        (Kind::Float, model.device()),
    );
    let image = model.encode_images(&pixels, &[grid])?;
    let ids = [
        model.config.vision_start_token_id,
        model.config.image_token_id,
        model.config.vision_end_token_id,
        0,
    ];
    let mut cache = model.new_cache();
    let hidden = model.prefill(&ids, Some(&image), &[grid], &mut cache)?;
    let logits = model.logits(&hidden.narrow(0, 3, 1));
    if logits.isfinite().all().int64_value(&[]) == 0 {
        return Err(adapter_error(
            &adapter.source,
            "the adapter makes the model produce non-finite logits",
        ));
    }
    Ok(())
}

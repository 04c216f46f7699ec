//! The Qwen2.5-VL directory: config, every expected tensor's presence and shape (from the
//! shards' headers), the tokenizer's special tokens against the config, the preprocessor
//! against the vision tower.

use std::collections::BTreeMap;
use std::path::Path;

use slc_engine::preprocess::qwen2_vl::Qwen2VlImageProcessorConfig;
use slc_engine::qwen2_5_vl::config::Qwen25VlConfig;
use slc_engine::qwen2_5_vl::shapes::checkpoint_tensors;
use slc_engine::tokenizer::QwenTokenizer;
use slc_engine::weights::{canonical_key, safetensors_files};

use super::Findings;
use slc_engine::safetensors_header::{TensorHeader, read_header};

/// What the bank check needs from the model.
pub struct ModelFacts {
    pub config: Qwen25VlConfig,
    /// Canonical module path of every LoRA-targetable linear → (in, out).
    pub linears: BTreeMap<String, (i64, i64)>,
    /// Elements of the weights the model loads.
    pub numel: u64,
}

/// Checks `dir`; `None` when the config is unusable (shapes cannot be checked then).
pub fn check_model(dir: &Path, findings: &mut Findings) -> Option<ModelFacts> {
    let config = match Qwen25VlConfig::from_file(&dir.join("config.json")) {
        Ok(config) => Some(config),
        Err(e) => {
            findings.problem(format!("config.json: {e}"));
            None
        }
    };
    check_tokenizer(dir, config.as_ref(), findings);
    check_preprocessor(dir, config.as_ref(), findings);
    let stored = stored_tensors(dir, findings);
    let config = config?;
    let stored = stored?;
    let mut numel = 0;
    let mut linears = BTreeMap::new();
    let mut missing = Vec::new();
    for (hub, shape) in checkpoint_tensors(&config) {
        let key = canonical_key(&hub);
        if shape.len() == 2 && hub != "model.embed_tokens.weight" {
            let module = key.trim_end_matches(".weight").to_string();
            linears.insert(module, (shape[1], shape[0]));
        }
        numel += shape.iter().product::<i64>() as u64;
        match stored.get(&key) {
            None => missing.push(hub),
            Some(found) if found.shape != shape => findings.problem(format!(
                "tensor `{hub}` has shape {:?}, the config needs {shape:?}",
                found.shape
            )),
            Some(_) => {}
        }
    }
    if config.tie_word_embeddings {
        let t = &config.text;
        linears.insert("lm_head".into(), (t.hidden_size, t.vocab_size));
    }
    findings.problems_limited(
        missing
            .iter()
            .map(|key| format!("tensor `{key}` is missing from the checkpoint")),
    );
    let expected: std::collections::BTreeSet<String> = checkpoint_tensors(&config)
        .into_iter()
        .map(|(hub, _)| canonical_key(&hub))
        .collect();
    let extra = stored.keys().filter(|k| !expected.contains(*k)).count();
    if extra > 0 {
        findings.note(format!(
            "{extra} stored tensors the model does not use (ignored), e.g. a tied lm_head"
        ));
    }
    findings.checked(format!(
        "{} tensors in the checkpoint's headers against config.json",
        expected.len()
    ));
    Some(ModelFacts {
        config,
        linears,
        numel,
    })
}

/// Every stored tensor by canonical key, from the shards' headers; `None` if unreadable.
fn stored_tensors(dir: &Path, findings: &mut Findings) -> Option<BTreeMap<String, TensorHeader>> {
    let files = match safetensors_files(dir) {
        Ok(files) => files,
        Err(e) => {
            findings.problem(e.to_string());
            return None;
        }
    };
    let mut stored = BTreeMap::new();
    let mut readable = true;
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        match read_header(file) {
            Err(e) => {
                findings.problem(format!("{name}: {e}"));
                readable = false;
            }
            Ok(tensors) => {
                for (key, tensor) in tensors {
                    if !matches!(tensor.dtype.as_str(), "F32" | "BF16" | "F16" | "F64") {
                        findings.problem(format!(
                            "{name}: tensor `{key}` is {}, not a float dtype the engine reads",
                            tensor.dtype
                        ));
                    }
                    if stored.insert(canonical_key(&key), tensor).is_some() {
                        findings.problem(format!("tensor `{key}` is stored twice"));
                    }
                }
            }
        }
    }
    if readable {
        check_index(dir, &stored, findings);
    }
    findings.checked(format!("{} safetensors file(s)", files.len()));
    readable.then_some(stored)
}

/// Each key the index places in a shard must be in that shard.
fn check_index(dir: &Path, stored: &BTreeMap<String, TensorHeader>, findings: &mut Findings) {
    let Ok(text) = std::fs::read_to_string(dir.join("model.safetensors.index.json")) else {
        return;
    };
    let Ok(index) = serde_json::from_str::<serde_json::Value>(&text) else {
        findings.problem("model.safetensors.index.json is not JSON".to_string());
        return;
    };
    let listed = index["weight_map"].as_object().into_iter().flatten();
    let absent = listed
        .filter(|(key, _)| !stored.contains_key(&canonical_key(key)))
        .map(|(key, file)| format!("the index places `{key}` in {file}, which does not hold it"));
    findings.problems_limited(absent);
}

fn check_tokenizer(dir: &Path, config: Option<&Qwen25VlConfig>, findings: &mut Findings) {
    let tokenizer = match QwenTokenizer::from_model_dir(dir) {
        Ok(tokenizer) => tokenizer,
        Err(e) => return findings.problem(format!("tokenizer.json: {e}")),
    };
    findings.checked(format!(
        "tokenizer.json ({} tokens)",
        tokenizer.vocab_size()
    ));
    let Some(config) = config else { return };
    let special = tokenizer.special_tokens();
    for (name, in_config, in_tokenizer) in [
        ("image_token_id", config.image_token_id, special.image_pad),
        ("video_token_id", config.video_token_id, special.video_pad),
        (
            "vision_start_token_id",
            config.vision_start_token_id,
            special.vision_start,
        ),
        (
            "vision_end_token_id",
            config.vision_end_token_id,
            special.vision_end,
        ),
    ] {
        if in_config != i64::from(in_tokenizer) {
            findings.problem(format!(
                "config.json's {name} is {in_config} but the tokenizer's token is {in_tokenizer}"
            ));
        }
    }
    if tokenizer.vocab_size() as i64 > config.text.vocab_size {
        findings.problem(format!(
            "the tokenizer has {} tokens, more than the model's {} embedding rows",
            tokenizer.vocab_size(),
            config.text.vocab_size
        ));
    }
}

fn check_preprocessor(dir: &Path, config: Option<&Qwen25VlConfig>, findings: &mut Findings) {
    let path = dir.join("preprocessor_config.json");
    let processor = match Qwen2VlImageProcessorConfig::from_json_file(&path) {
        Ok(processor) => processor,
        Err(e) => return findings.problem(format!("preprocessor_config.json: {e}")),
    };
    findings.checked("preprocessor_config.json".into());
    let Some(config) = config else { return };
    let v = &config.vision;
    for (name, processor_value, vision_value) in [
        ("patch_size", processor.patch_size, v.patch_size),
        (
            "temporal_patch_size",
            processor.temporal_patch_size,
            v.temporal_patch_size,
        ),
        ("merge_size", processor.merge_size, v.spatial_merge_size),
    ] {
        if processor_value as i64 != vision_value {
            findings.problem(format!(
                "preprocessor_config.json's {name} is {processor_value}, the vision tower's is {vision_value}"
            ));
        }
    }
}

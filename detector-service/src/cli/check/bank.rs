//! The adapter bank against the model (every adapter's targets exist, ranks and shapes fit)
//! and against the CLIP model (the one its embeddings were made with), and the CLIP directory.

use std::collections::BTreeMap;
use std::path::Path;

use slc_engine::clip::config::ClipVisionConfig;
use slc_engine::lora::bank::{BankDictionary, ClipModelId};
use slc_engine::lora::config::{AdapterConfig, TargetModules};
use slc_engine::weights::{canonical_key, safetensors_files};

use super::Findings;
use slc_engine::safetensors_header::{TensorHeader, read_header};

const KEY_PREFIX: &str = "base_model.model.";

type Shape = Vec<i64>;
/// Module path → (lora_A shape, lora_B shape).
type FactorShapes = BTreeMap<String, (Shape, Shape)>;

/// Checks the bank; returns its adapters' total elements.
pub fn check_bank(
    bank: &Path,
    clip: Option<&ClipModelId>,
    linears: Option<&BTreeMap<String, (i64, i64)>>,
    findings: &mut Findings,
) -> u64 {
    let dictionary = match BankDictionary::read(bank) {
        Ok(dictionary) => dictionary,
        Err(e) => {
            findings.problem(format!("adapter bank: {e}"));
            return 0;
        }
    };
    let made_with = &dictionary.clip_model;
    match clip {
        Some(clip) if clip != made_with => findings.problem(format!(
            "the bank's embeddings were made with CLIP `{}` ({}-d); --clip is `{}` ({}-d)",
            made_with.name, made_with.embedding_dim, clip.name, clip.embedding_dim
        )),
        Some(_) => {}
        None => findings.note(format!(
            "no --clip: the bank's CLIP model `{}` was not checked",
            made_with.name
        )),
    }
    check_embeddings(bank, &dictionary, findings);
    let mut numel = 0;
    for entry in &dictionary.meta_concepts {
        let dir = bank.join(&entry.adapter);
        let mut local = Findings::default();
        numel += check_adapter(&dir, linears, &mut local);
        for problem in local.problems {
            findings.problem(format!(
                "adapter `{}` ({}): {problem}",
                entry.name, entry.adapter
            ));
        }
    }
    findings.checked(format!(
        "adapter bank: {} meta-concepts",
        dictionary.meta_concepts.len()
    ));
    numel
}

fn check_embeddings(bank: &Path, dictionary: &BankDictionary, findings: &mut Findings) {
    let dim = dictionary.clip_model.embedding_dim;
    let file = dictionary.embeddings_file.as_ref().map(|name| {
        read_header(&bank.join(name)).map_err(|e| format!("embeddings file {name}: {e}"))
    });
    if let Some(Err(e)) = &file {
        findings.problem(e.clone());
    }
    for entry in &dictionary.meta_concepts {
        let length = match (&entry.embedding, &entry.embedding_key, &file) {
            (Some(inline), _, _) => Some(inline.len() as i64),
            (None, Some(key), Some(Ok(tensors))) => tensors.get(key).map(|t| t.numel() as i64),
            (None, Some(_), Some(Err(_))) => continue,
            _ => None,
        };
        match length {
            Some(length) if length == dim => {}
            Some(length) => findings.problem(format!(
                "meta-concept `{}`: embedding has {length} values, the bank's CLIP gives {dim}",
                entry.name
            )),
            None => findings.problem(format!("meta-concept `{}` has no embedding", entry.name)),
        }
    }
}

/// One PEFT adapter directory; returns its elements.
fn check_adapter(
    dir: &Path,
    linears: Option<&BTreeMap<String, (i64, i64)>>,
    findings: &mut Findings,
) -> u64 {
    let config = std::fs::read_to_string(dir.join("adapter_config.json"))
        .map_err(|e| format!("adapter_config.json: {e}"))
        .and_then(|text| {
            serde_json::from_str::<AdapterConfig>(&text)
                .map_err(|e| format!("adapter_config.json is not a PEFT LoRA config: {e}"))
        })
        .and_then(|config| config.check_supported().map(|()| config));
    let tensors = read_header(&dir.join("adapter_model.safetensors"))
        .map_err(|e| format!("adapter_model.safetensors: {e}"));
    let (config, tensors) = match (config, tensors) {
        (Ok(config), Ok(tensors)) => (config, tensors),
        (config, tensors) => {
            for e in [config.err(), tensors.err()].into_iter().flatten() {
                findings.problem(e);
            }
            return 0;
        }
    };
    let numel = tensors.values().map(TensorHeader::numel).sum();
    let pairs = match factor_pairs(&tensors) {
        Ok(pairs) => pairs,
        Err(e) => {
            findings.problem(e);
            return numel;
        }
    };
    if let Some(linears) = linears {
        check_against_model(&config, &pairs, linears, findings);
    }
    numel
}

/// Module path → (lora_A shape, lora_B shape), from PEFT's keys in either layout.
fn factor_pairs(tensors: &BTreeMap<String, TensorHeader>) -> Result<FactorShapes, String> {
    let mut halves: BTreeMap<String, (Option<Shape>, Option<Shape>)> = BTreeMap::new();
    for (key, tensor) in tensors {
        let rest = key.strip_prefix(KEY_PREFIX);
        let (module, is_a) = match (
            rest.and_then(|r| r.strip_suffix(".lora_A.weight")),
            rest.and_then(|r| r.strip_suffix(".lora_B.weight")),
        ) {
            (Some(module), _) => (module, true),
            (None, Some(module)) => (module, false),
            _ => return Err(format!("unexpected key `{key}` (not a PEFT LoRA factor)")),
        };
        let slot = halves.entry(canonical_key(module)).or_default();
        let shape = Some(tensor.shape.clone());
        if is_a { slot.0 = shape } else { slot.1 = shape }
    }
    halves
        .into_iter()
        .map(|(module, pair)| match pair {
            (Some(a), Some(b)) => Ok((module, (a, b))),
            _ => Err(format!("`{module}` has only one of lora_A and lora_B")),
        })
        .collect()
}

fn check_against_model(
    config: &AdapterConfig,
    pairs: &FactorShapes,
    linears: &BTreeMap<String, (i64, i64)>,
    findings: &mut Findings,
) {
    if let TargetModules::Names(names) = &config.target_modules {
        for name in names {
            let exists = linears
                .keys()
                .any(|path| path == name || path.ends_with(&format!(".{name}")));
            if !exists {
                findings.problem(format!(
                    "target module `{name}` does not exist in this model"
                ));
            }
        }
    }
    let mut problems = Vec::new();
    for (path, (a, b)) in pairs {
        let Some(&(input, output)) = linears.get(path) else {
            problems.push(format!("targets `{path}`, which this model does not have"));
            continue;
        };
        let rank = config.rank_for(path);
        if !config.targets(path) {
            problems.push(format!(
                "weights for `{path}`, which target_modules does not select"
            ));
        } else if *a != [rank, input] || *b != [output, rank] {
            problems.push(format!(
                "`{path}`: lora_A {a:?} and lora_B {b:?} do not fit rank {rank} and the layer's \
                 [in {input}, out {output}]"
            ));
        }
    }
    for path in linears.keys().filter(|p| config.targets(p)) {
        if !pairs.contains_key(path) {
            problems.push(format!(
                "target_modules selects `{path}` but it has no weights"
            ));
        }
    }
    findings.problems_limited(problems.into_iter());
}

/// The CLIP directory: config, weights' headers, preprocessor. Returns its identity and
/// elements.
pub fn check_clip(dir: &Path, findings: &mut Findings) -> Option<(ClipModelId, u64)> {
    if let Err(e) = ClipVisionConfig::from_model_dir(dir) {
        findings.problem(format!("CLIP config.json: {e}"));
        return None;
    }
    if let Err(e) = slc_engine::preprocess::ClipImageProcessor::from_model_dir(dir) {
        findings.problem(format!("CLIP preprocessor_config.json: {e}"));
    }
    let mut numel = 0;
    match safetensors_files(dir) {
        Err(e) => findings.problem(format!("CLIP weights: {e}")),
        Ok(files) => {
            for file in files {
                match read_header(&file) {
                    Ok(tensors) => numel += tensors.values().map(TensorHeader::numel).sum::<u64>(),
                    Err(e) => findings.problem(format!("CLIP {}: {e}", file.display())),
                }
            }
        }
    }
    let id = match ClipModelId::from_clip_dir(dir) {
        Ok(id) => id,
        Err(e) => {
            findings.problem(format!("CLIP: {e}"));
            return None;
        }
    };
    findings.checked(format!(
        "CLIP `{}` ({}-d embeddings)",
        id.name, id.embedding_dim
    ));
    Some((id, numel))
}

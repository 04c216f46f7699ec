//! Parity of LoRA adapters with HF PEFT 0.17.1 on the tiny Qwen2.5-VL checkpoint: adapters saved
//! by PEFT (`tests/fixtures/lora/make_fixtures.py`, random nonzero A and B) give full-prompt
//! logits within 1e-4 of PEFT's for the one-image prompt of the Qwen2.5-VL references, applied
//! unmerged or merged, in both key layouts; and adapters that do not fit the model are refused.

use crate::qwen25vl_parity::{fixture_dir, load, prompt, references};
use slc_engine::lora::{
    LoraAdapter, attach_adapter, detach_adapters, merge_adapter, save_peft_adapter,
};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub fn lora_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lora")
        .join(name)
}

fn lora_references() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(lora_fixture("references.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// Full-prompt logits of the `one_image` reference prompt with whatever adapter is attached.
pub fn one_image_logits(model: &Qwen25VlModel) -> Tensor {
    let refs = references();
    let (input_ids, pixels, grids) = prompt(&refs, "one_image");
    let embeds = pixels.map(|p| model.encode_images(&p, &grids).unwrap());
    let mut cache = model.new_cache();
    let hidden = model
        .prefill(&input_ids, embeds.as_ref(), &grids, &mut cache)
        .unwrap();
    model.logits(&hidden)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn assert_adapter_matches_peft(adapter_dir: &str, reference: &str) {
    let refs = lora_references();
    let mut model = load("untied");
    let base = one_image_logits(&model);
    assert!(
        max_diff(&base, &refs["logits_base"]) <= 1e-4,
        "base model drifted from the reference"
    );

    let adapter = LoraAdapter::load(&lora_fixture(adapter_dir), &model).unwrap();
    attach_adapter(&mut model, &adapter);
    let ours = one_image_logits(&model);
    let theirs = &refs[&format!("logits_{reference}")];
    let diff = max_diff(&ours, theirs);
    assert!(
        diff <= 1e-4,
        "{adapter_dir}: max abs logit diff from PEFT {diff} > 1e-4"
    );
    // The adapter must really act: a silently skipped adapter would equal the base model.
    let effect = max_diff(&ours, &base);
    assert!(
        effect > 1e-2,
        "{adapter_dir}: the adapter changed the logits by only {effect}"
    );

    // Switching back to the base model is exact.
    detach_adapters(&mut model);
    assert_eq!(max_diff(&one_image_logits(&model), &base), 0.0);

    // Merged mode gives the same logits.
    merge_adapter(&mut model, &adapter).unwrap();
    let merged = one_image_logits(&model);
    let diff = max_diff(&merged, theirs);
    assert!(
        diff <= 1e-4,
        "{adapter_dir} merged: max abs logit diff from PEFT {diff} > 1e-4"
    );
}

#[test]
fn text_and_vision_mlp_adapter_matches_peft() {
    assert_adapter_matches_peft("text-and-vision-mlp", "text-and-vision-mlp");
}

#[test]
fn rslora_adapter_on_fused_vision_qkv_matches_peft() {
    assert_adapter_matches_peft("rslora-qkv", "rslora-qkv");
}

#[test]
fn legacy_key_layout_matches_peft() {
    assert_adapter_matches_peft("legacy-keys", "text-and-vision-mlp");
}

#[test]
fn v5_checkpoint_layout_takes_the_same_adapter() {
    let refs = lora_references();
    let mut model = load("untied-v5");
    let adapter = LoraAdapter::load(&lora_fixture("text-and-vision-mlp"), &model).unwrap();
    attach_adapter(&mut model, &adapter);
    let diff = max_diff(
        &one_image_logits(&model),
        &refs["logits_text-and-vision-mlp"],
    );
    assert!(diff <= 1e-4, "untied-v5: {diff}");
}

/// A copy of a fixture adapter with its config edited, in a fresh temporary directory.
fn edited_adapter(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "slc-lora-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let source = lora_fixture("text-and-vision-mlp");
    std::fs::copy(
        source.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("adapter_config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    let model = load("untied");
    match LoraAdapter::load(dir, &model) {
        Ok(_) => panic!("{} loaded although it does not fit", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn adapter_with_the_wrong_rank_is_refused() {
    let dir = edited_adapter("rank", |c| c["r"] = 8.into());
    let message = load_error(&dir);
    assert!(message.contains("do not fit rank 8"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn adapter_targeting_modules_the_model_lacks_is_refused() {
    let dir = edited_adapter("targets", |c| {
        c["target_modules"] = serde_json::json!(["q_proj", "c_attn"]);
    });
    let message = load_error(&dir);
    assert!(message.contains("`c_attn` does not exist"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn adapter_for_a_bigger_model_is_refused() {
    // Weights for a layer index the tiny model does not have.
    let dir = edited_adapter("layers", |_| {});
    let path = dir.join("adapter_model.safetensors");
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    let (key, a) = tensors
        .iter()
        .find(|(k, _)| k.contains("layers.0.self_attn.q_proj.lora_A"))
        .map(|(k, t)| (k.replace("layers.0.", "layers.35."), t.shallow_clone()))
        .unwrap();
    let b_key = key.replace("lora_A", "lora_B");
    let b = tensors
        .iter()
        .find(|(k, _)| k.contains("layers.0.self_attn.q_proj.lora_B"))
        .map(|(_, t)| t.shallow_clone())
        .unwrap();
    tensors.push((key, a));
    tensors.push((b_key, b));
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("layers.35.self_attn.q_proj"), "{message}");
    assert!(message.contains("does not have"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn dora_adapter_is_refused_not_ignored() {
    let dir = edited_adapter("dora", |c| c["use_dora"] = true.into());
    assert!(load_error(&dir).contains("DoRA"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn averaging_an_adapter_with_itself_changes_nothing() {
    let refs = lora_references();
    let mut model = load("untied");
    let adapter = LoraAdapter::load(&lora_fixture("text-and-vision-mlp"), &model).unwrap();
    let legacy = LoraAdapter::load(&lora_fixture("legacy-keys"), &model).unwrap();
    let averaged = LoraAdapter::average(&[&adapter, &legacy]).unwrap();
    attach_adapter(&mut model, &averaged);
    let diff = max_diff(
        &one_image_logits(&model),
        &refs["logits_text-and-vision-mlp"],
    );
    assert!(diff <= 1e-4, "{diff}");
    // Averaging leaves its inputs as they were: the first adapter still gives its own logits.
    attach_adapter(&mut model, &adapter);
    let diff = max_diff(
        &one_image_logits(&model),
        &refs["logits_text-and-vision-mlp"],
    );
    assert!(diff <= 1e-4, "the averaged adapter changed: {diff}");
    let other = LoraAdapter::load(&lora_fixture("rslora-qkv"), &model).unwrap();
    assert!(LoraAdapter::average(&[&adapter, &other]).is_err());
}

pub fn python() -> PathBuf {
    std::env::var_os("SLC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/slc/torch-2.11.0/bin/python")
        })
}

/// Runs a reference `script` with `args` and one more, a fresh safetensors path it writes;
/// returns what it wrote.
pub fn python_outputs(script: &Path, args: &[&std::ffi::OsStr]) -> HashMap<String, Tensor> {
    let out = std::env::temp_dir().join(format!(
        "slc-reference-{}-{}.safetensors",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let status = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .arg(&out)
        .status()
        .expect("the Python interpreter with transformers and PEFT (SLC_PYTHON) must run");
    assert!(status.success(), "{} {args:?} failed", script.display());
    let outputs = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    std::fs::remove_file(&out).unwrap();
    outputs
}

/// PEFT's one-image logits for `adapter_dir` on the base model in `dtype` (`f32` or `bf16`),
/// through `tests/fixtures/lora/peft_logits.py`, and how many modules it wrapped.
fn peft_logits(adapter_dir: &Path, dtype: &str) -> (Tensor, usize) {
    let script = lora_fixture("peft_logits.py");
    let mut theirs = python_outputs(&script, &[adapter_dir.as_os_str(), dtype.as_ref()]);
    let wrapped = theirs["wrapped_modules"].int64_value(&[0]) as usize;
    (theirs.remove("logits").unwrap(), wrapped)
}

/// Loads `adapter_dir` in HF PEFT and asserts its one-image logits are within 1e-4 of ours, and
/// that PEFT wrapped as many modules as we did.
pub fn assert_peft_agrees(adapter_dir: &Path) {
    let (theirs, wrapped) = peft_logits(adapter_dir, "f32");
    let mut model = load("untied");
    let adapter = LoraAdapter::load(adapter_dir, &model).unwrap();
    attach_adapter(&mut model, &adapter);
    let diff = max_diff(&one_image_logits(&model), &theirs);
    assert!(
        diff <= 1e-4,
        "{}: max abs logit diff from PEFT {diff} > 1e-4",
        adapter_dir.display()
    );
    assert_eq!(
        wrapped,
        adapter.modules.len(),
        "PEFT adapted a different set of modules"
    );
}

/// On a bf16 base model the adapters' deltas are computed as PEFT computes them (f32 factors,
/// the update added in f32, one cast back), so the logits are PEFT's bit for bit: the base
/// model's bf16 path is already bit-identical with transformers on this CPU
/// (`qwen25vl_bf16_parity.rs`), and any bf16 rounding of the factors or the sum would move a
/// logit by at least one bf16 step.
#[test]
fn bf16_lora_deltas_equal_peft_bit_for_bit() {
    for name in ["text-and-vision-mlp", "rslora-qkv"] {
        let dir = lora_fixture(name);
        let (theirs, _) = peft_logits(&dir, "bf16");
        let options = LoadOptions {
            device: Device::Cpu,
            dtype: Kind::BFloat16,
            quant: slc_engine::quant::Quant::None,
        };
        let mut model = Qwen25VlModel::load(&fixture_dir("untied"), options).unwrap();
        let adapter = LoraAdapter::load(&dir, &model).unwrap();
        attach_adapter(&mut model, &adapter);
        let diff = max_diff(&one_image_logits(&model), &theirs);
        assert_eq!(diff, 0.0, "{name}: max abs logit diff from PEFT in bf16");
    }
}

#[test]
fn adapters_the_engine_writes_load_in_peft() {
    let model = load("untied");
    let adapter = LoraAdapter::load(&lora_fixture("rslora-qkv"), &model).unwrap();
    let factors = adapter
        .modules
        .iter()
        .map(|(path, w)| (path.clone(), (w.a.shallow_clone(), w.b.shallow_clone())))
        .collect();
    let dir = std::env::temp_dir().join(format!("slc-lora-written-{}", std::process::id()));
    save_peft_adapter(&dir, &adapter.config, &factors).unwrap();
    assert_peft_agrees(&dir);
    std::fs::remove_dir_all(dir).unwrap();
}

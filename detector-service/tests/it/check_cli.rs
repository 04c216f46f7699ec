//! `slc-detector check` on the tiny fixtures (they pass, with the memory they need) and on
//! broken copies of them: each is caught, with a reason that names what is wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tch::Tensor;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures")
}

fn model() -> PathBuf {
    fixtures().join("qwen25vl/untied")
}

/// Runs `check` with `args`; (exit success, report).
fn check(args: &[&Path]) -> (bool, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slc-detector"));
    command
        .arg("check")
        .env_remove("SLC_DTYPE")
        .env_remove("SLC_DEVICE");
    for pair in args.chunks(2) {
        command.arg(pair[0]).arg(pair[1]);
    }
    let output = command.output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.success(), report["ok"] == true, "{report}");
    (output.status.success(), report)
}

fn flag(name: &str) -> &Path {
    Path::new(name)
}

fn problems(report: &Value) -> Vec<String> {
    serde_json::from_value(report["problems"].clone()).unwrap()
}

fn assert_caught(report: &Value, fragments: &[&str]) {
    let problems = problems(report);
    assert!(
        problems
            .iter()
            .any(|p| fragments.iter().all(|f| p.contains(f))),
        "no problem mentions {fragments:?}: {problems:#?}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_fixtures_pass_and_the_memory_they_need_is_reported() {
    let bank = fixtures().join("lora/bank");
    let clip = fixtures().join("clip/tiny-clip");
    let (ok, f32_report) = check(&[
        flag("--model"),
        &model(),
        flag("--clip"),
        &clip,
        flag("--adapter-bank"),
        &bank,
    ]);
    assert!(ok, "{f32_report:#}");
    let memory = &f32_report["memory"];
    assert_eq!(memory["dtype"], "f32");
    assert!(memory["adapters_bytes"].as_u64().unwrap() > 0);
    assert!(memory["clip_bytes"].as_u64().unwrap() > 0);
    // The file is f32 and holds exactly the model's tensors: its data is the weights' size.
    let file = std::fs::metadata(model().join("model.safetensors"))
        .unwrap()
        .len();
    let weights = memory["model_weights_bytes"].as_u64().unwrap();
    assert!(
        weights <= file && weights * 101 / 100 > file,
        "{weights} vs {file}"
    );
    let (ok, bf16_report) = check(&[flag("--model"), &model(), flag("--dtype"), flag("bf16")]);
    assert!(ok, "{bf16_report:#}");
    assert_eq!(
        bf16_report["memory"]["model_weights_bytes"]
            .as_u64()
            .unwrap()
            * 2,
        weights
    );
    for layout in ["tied-hub-sharded", "untied-v5"] {
        let (ok, report) = check(&[flag("--model"), &fixtures().join("qwen25vl").join(layout)]);
        assert!(ok, "{layout}: {report:#}");
    }
}

#[test]
fn a_missing_or_truncated_shard_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let sharded = dir.path().join("sharded");
    copy_dir(&fixtures().join("qwen25vl/tied-hub-sharded"), &sharded);
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let (ok, report) = check(&[flag("--model"), &sharded]);
    assert!(!ok);
    assert_caught(&report, &["model-00002-of-00002.safetensors", "missing"]);

    let truncated = dir.path().join("truncated");
    copy_dir(&fixtures().join("qwen25vl/tied-hub-sharded"), &truncated);
    let shard = truncated.join("model-00001-of-00002.safetensors");
    let length = std::fs::metadata(&shard).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(length - 1000)
        .unwrap();
    let (ok, report) = check(&[flag("--model"), &truncated]);
    assert!(!ok);
    assert_caught(&report, &["model-00001-of-00002.safetensors", "truncated"]);
}

#[test]
fn a_tensor_of_the_wrong_shape_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model(), dir.path());
    let file = dir.path().join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&file).unwrap();
    let (name, tensor) = tensors
        .iter_mut()
        .find(|entry| entry.0.ends_with("layers.0.mlp.up_proj.weight"))
        .unwrap();
    let rows = tensor.size()[0];
    *tensor = tensor.narrow(0, 0, rows - 1).contiguous();
    let name = name.clone();
    Tensor::write_safetensors(&tensors, &file).unwrap();
    let (ok, report) = check(&[flag("--model"), dir.path()]);
    assert!(!ok);
    assert_caught(&report, &[&name, "shape", "config needs"]);
}

#[test]
fn a_tokenizer_without_the_image_tokens_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model(), dir.path());
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tokenizer["added_tokens"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["content"] != "<|image_pad|>");
    std::fs::write(&path, serde_json::to_vec(&tokenizer).unwrap()).unwrap();
    let (ok, report) = check(&[flag("--model"), dir.path()]);
    assert!(!ok);
    assert_caught(&report, &["tokenizer.json", "<|image_pad|>"]);
}

/// An adapter trained for the real 3B widths (hidden 2048), dropped into the tiny bank.
#[test]
fn a_foreign_adapter_and_a_different_clip_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank");
    copy_dir(&fixtures().join("lora/bank"), &bank);
    let module = "base_model.model.model.language_model.layers.0.self_attn.q_proj";
    let factors = [
        (
            format!("{module}.lora_A.weight"),
            Tensor::zeros([8, 2048], tch::kind::FLOAT_CPU),
        ),
        (
            format!("{module}.lora_B.weight"),
            Tensor::zeros([2048, 8], tch::kind::FLOAT_CPU),
        ),
        (
            "base_model.model.model.language_model.layers.99.mlp.up_proj.lora_A.weight".into(),
            Tensor::zeros([8, 2048], tch::kind::FLOAT_CPU),
        ),
        (
            "base_model.model.model.language_model.layers.99.mlp.up_proj.lora_B.weight".into(),
            Tensor::zeros([11008, 8], tch::kind::FLOAT_CPU),
        ),
    ];
    Tensor::write_safetensors(&factors, bank.join("adapters/bo/adapter_model.safetensors"))
        .unwrap();
    let clip = dir.path().join("another-clip");
    copy_dir(&fixtures().join("clip/tiny-clip"), &clip);
    let (ok, report) = check(&[
        flag("--model"),
        &model(),
        flag("--adapter-bank"),
        &bank,
        flag("--clip"),
        &clip,
    ]);
    assert!(!ok);
    assert_caught(
        &report,
        &["adapter `bo`", "layers.0.self_attn.q_proj", "do not fit"],
    );
    assert_caught(&report, &["adapter `bo`", "layers.99", "does not have"]);
    assert_caught(&report, &["made with CLIP `tiny-clip`", "another-clip"]);
    let others = problems(&report)
        .iter()
        .filter(|p| p.contains("brown-duck") || p.contains("dug"))
        .count();
    assert_eq!(others, 0, "the other adapters are fine: {report:#}");
}

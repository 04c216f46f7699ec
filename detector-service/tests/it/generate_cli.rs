//! `slc-detector generate` end to end on the tiny fixture checkpoint: a real photo through our
//! preprocessing, chat template, model and greedy loop must give transformers' 32 greedy tokens
//! and first-token logits (recorded by engine/tests/fixtures/qwen25vl/make_fixtures.py).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use tch::Tensor;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/qwen25vl")
}

fn references() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("references.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("generate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn generate_matches_hf_on_the_fixture_checkpoint() {
    let refs = references();
    let model = fixtures().join("untied");
    let image = fixtures().join("photo-bo-0.jpg");
    let logits_path =
        std::env::temp_dir().join(format!("slc-cli-logits-{}.safetensors", std::process::id()));
    let output = run(&[
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What is in this photo?",
        "--greedy",
        "--max-new-tokens",
        "32",
        "--logits-out",
        logits_path.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: Vec<i64> = Vec::try_from(&refs["greedy_untied_cli"]).unwrap();
    let got: Vec<i64> = json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        json["usage"]["prompt_tokens"].as_u64().unwrap() as i64,
        refs["input_ids_cli"].size()[0]
    );
    assert_eq!(json["usage"]["completion_tokens"], 32);
    assert_eq!(json["finish_reason"], "length");
    assert!(json["text"].is_string());
    assert!(json["timings"]["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(json["timings"]["vision_encode_ms"].as_f64().unwrap() > 0.0);

    let written: HashMap<String, Tensor> = Tensor::read_safetensors(&logits_path)
        .unwrap()
        .into_iter()
        .collect();
    let logits = &written["logits"];
    assert_eq!(logits.kind(), tch::Kind::Float);
    assert_eq!(logits.size(), refs["first_logits_untied_cli"].size());
    let diff = (logits - &refs["first_logits_untied_cli"])
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-4, "first-token logits differ by {diff}");
    std::fs::remove_file(logits_path).ok();
}

#[test]
fn bad_inputs_fail_with_a_message_not_a_panic() {
    let model = fixtures().join("untied");
    let not_an_image = fixtures().join("untied/config.json");
    let output = run(&[
        "--model",
        model.to_str().unwrap(),
        "--image",
        not_an_image.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("image"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = run(&[
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hi",
        "--dtype",
        "int3",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown dtype"));

    let output = run(&[
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hi",
        "--device",
        "tpu",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown device"));

    let output = run(&[
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "100000",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("exceeds the context"));
}

#[test]
fn json_schema_output_parses_and_uses_jump_forward() {
    let model = fixtures().join("untied");
    let schema_path =
        std::env::temp_dir().join(format!("slc-cli-schema-{}.json", std::process::id()));
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"present": {"type": "boolean"}, "location": {"enum": ["left", "right"]}},
        "required": ["present", "location"],
        "additionalProperties": false
    });
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let output = run(&[
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "Is the dog here?",
        "--json-schema",
        schema_path.to_str().unwrap(),
        "--max-new-tokens",
        "64",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let text = json["text"].as_str().unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(parsed["present"].is_boolean(), "{parsed}");
    assert!(
        ["left", "right"].contains(&parsed["location"].as_str().unwrap()),
        "{parsed}"
    );
    assert_eq!(json["finish_reason"], "stop");
    let steps = json["usage"]["decode_steps"].as_u64().unwrap();
    let emitted = json["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        steps < emitted,
        "jump-forward should save steps: {steps} steps for {emitted} tokens"
    );
    std::fs::remove_file(schema_path).ok();
}

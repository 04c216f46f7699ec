//! `slc-detector meta-train` and `embed` as users run them: the binary on a dataset built from
//! the sample concepts, the bank it writes served by the real engine, and the bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::{TestOptions, engine_fixtures, spawn_app};

fn sample_concepts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/concepts")
}

/// Concept folders in the meta-training layout, from the sample database.
fn make_dataset(root: &Path, names: &[&str]) {
    let source = sample_concepts();
    let database: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("database.json")).unwrap())
            .unwrap();
    for name in names {
        let concept = &database["concept_dict"][format!("<{name}>")];
        let folder = root.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(
            source.join(concept["image"].as_str().unwrap()),
            folder.join("0.jpg"),
        )
        .unwrap();
        let info = concept["info"].as_str().unwrap();
        std::fs::write(folder.join("description.txt"), info).unwrap();
        let conversations = serde_json::json!([
            {"conversations": [
                {"from": "system", "value": format!("You are a helpful assistant. {info}")},
                {"from": "human", "value": format!("<image>\nIs <{name}> in this photo?")},
                {"from": "gpt", "value": format!("Yes, <{name}> is in this photo.")}],
             "images": ["0.jpg"]},
            {"conversations": [
                {"from": "human", "value": format!("Describe <{name}>.")},
                {"from": "gpt", "value": info}],
             "images": []}
        ]);
        std::fs::write(folder.join("conversations.json"), conversations.to_string()).unwrap();
    }
}

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slc-detector"))
}

fn meta_train(dataset: &Path, output: &Path, k: usize) -> std::process::Output {
    let fixtures = engine_fixtures();
    detector()
        .arg("meta-train")
        .arg("--dataset")
        .arg(dataset)
        .arg("--model")
        .arg(fixtures.join("qwen25vl/untied"))
        .arg("--clip")
        .arg(fixtures.join("clip/tiny-clip"))
        .arg("--output")
        .arg(output)
        .args(["--k", &k.to_string(), "--steps", "3", "--batch-size", "2"])
        .args(["--learning-rate", "0.01", "--seed", "3", "--quiet"])
        .output()
        .unwrap()
}

#[tokio::test]
async fn meta_train_writes_a_bank_the_detector_serves() {
    let directory = tempfile::tempdir().unwrap();
    let dataset = directory.path().join("dataset");
    make_dataset(&dataset, &["bo", "brown-duck", "dug"]);
    let output = directory.path().join("bank");
    let run = meta_train(&dataset, &output, 2);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let adapters = report["adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 2, "{report}");
    for adapter in adapters {
        let losses: Vec<f64> = adapter["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 3);
        assert!(losses[2] < losses[0], "loss falls: {losses:?}");
    }
    let names: Vec<String> = adapters
        .iter()
        .map(|a| a["meta_concept"].as_str().unwrap().to_string())
        .collect();

    let bank = output.clone();
    let app = spawn_app(TestOptions {
        real_engine: true,
        ..TestOptions::tweak(move |config| config.adapter_bank = Some(bank))
    })
    .await;
    app.state.workers.readiness().expect("the new bank loads");
    assert_eq!(app.model_ids().await[1..], names);
    app.stop().await;

    // K larger than the number of concepts is refused, naming both.
    let too_many = meta_train(&dataset, &directory.path().join("other"), 5);
    assert!(!too_many.status.success());
    let message = String::from_utf8_lossy(&too_many.stderr);
    assert!(
        message.contains("K = 5") && message.contains("only 3"),
        "{message}"
    );
}

#[test]
fn embed_prints_embeddings_and_cosines() {
    let concepts = sample_concepts();
    let output = detector()
        .arg("embed")
        .arg("--clip")
        .arg(engine_fixtures().join("clip/tiny-clip"))
        .arg(concepts.join("bo.jpg"))
        .arg(concepts.join("dug.jpg"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["clip_model"]["name"], "tiny-clip");
    assert_eq!(report["images"].as_array().unwrap().len(), 2);
    assert_eq!(
        report["images"][0]["embedding"].as_array().unwrap().len(),
        16
    );
    let cosines = &report["cosines"];
    for i in 0..2 {
        assert!(
            (cosines[i][i].as_f64().unwrap() - 1.0).abs() < 1e-5,
            "{cosines}"
        );
    }
    assert_eq!(cosines[0][1], cosines[1][0]);

    let missing = detector()
        .arg("embed")
        .arg("--clip")
        .arg(engine_fixtures().join("clip/tiny-clip"))
        .arg("/nonexistent.jpg")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.jpg"));
}

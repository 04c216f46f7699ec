//! The adapter bank fixture (`tests/fixtures/lora/bank`, written by `make_bank.py` with the tiny
//! CLIP and PEFT): it loads for the tiny model, Eq. 1 picks a concept's own meta-concept, and a
//! CLIP mismatch, a missing adapter or a wrong embedding length are start-up errors.

use crate::lora_parity::lora_fixture;
use crate::qwen25vl_parity::load;
use slc_engine::lora::{AdapterBank, ClipModelId};
use std::path::{Path, PathBuf};

pub fn tiny_clip_id() -> ClipModelId {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tiny-clip");
    ClipModelId::from_clip_dir(&dir).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn bank_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slc-bank-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&lora_fixture("bank"), &dir);
    dir
}

fn load_error(bank: &Path, clip: &ClipModelId) -> String {
    let mut model = load("untied");
    match AdapterBank::load(bank, &mut model, clip) {
        Ok(_) => panic!("{} loaded although it is broken", bank.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn fixture_bank_loads_and_selects_by_eq_1() {
    let mut model = load("untied");
    let clip = tiny_clip_id();
    assert_eq!(
        clip,
        ClipModelId {
            name: "tiny-clip".into(),
            embedding_dim: 16
        }
    );
    let bank = AdapterBank::load(&lora_fixture("bank"), &mut model, &clip).unwrap();
    let names: Vec<&str> = bank.meta_concepts.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["bo", "brown-duck", "dug"]);
    for (index, meta) in bank.meta_concepts.iter().enumerate() {
        let chosen = bank
            .select(std::slice::from_ref(&meta.embedding), 1)
            .unwrap();
        assert_eq!(chosen.choices[0].index, index);
        assert_eq!(chosen.names, [meta.name.as_str()]);
        assert!((chosen.choices[0].similarity - 1.0).abs() < 1e-5);
        assert_eq!(chosen.adapter.modules.len(), 2 * 7);
    }
    let top2 = bank
        .select(&[bank.meta_concepts[0].embedding.clone()], 2)
        .unwrap();
    assert_eq!(top2.choices.len(), 2);
    assert!(top2.choices[0].similarity >= top2.choices[1].similarity);
}

#[test]
fn bank_made_with_another_clip_is_refused() {
    let other = ClipModelId {
        name: "clip-vit-large-patch14".into(),
        embedding_dim: 768,
    };
    let message = load_error(&lora_fixture("bank"), &other);
    assert!(message.contains("made with CLIP `tiny-clip`"), "{message}");
}

#[test]
fn bank_with_a_missing_adapter_is_refused() {
    let bank = bank_copy("missing");
    std::fs::remove_dir_all(bank.join("adapters/dug")).unwrap();
    let message = load_error(&bank, &tiny_clip_id());
    assert!(
        message.contains("`dug`") && message.contains("is missing"),
        "{message}"
    );
    std::fs::remove_dir_all(bank).unwrap();
}

#[test]
fn bank_with_a_wrong_embedding_length_is_refused() {
    let bank = bank_copy("length");
    let path = bank.join("dictionary.json");
    let mut dictionary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    dictionary["meta_concepts"][1]["embedding"] = serde_json::json!([0.5, 0.5]);
    std::fs::write(&path, dictionary.to_string()).unwrap();
    let message = load_error(&bank, &tiny_clip_id());
    assert!(
        message.contains("`brown-duck`: embedding has 2 values"),
        "{message}"
    );
    std::fs::remove_dir_all(bank).unwrap();
}

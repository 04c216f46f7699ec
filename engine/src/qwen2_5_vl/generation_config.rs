//! The eos ids of a checkpoint directory, as transformers 4.57.6 finds them for `generate`:
//! `generation_config.json`'s `eos_token_id` (`src/transformers/generation/configuration_utils.py`,
//! `GenerationConfig`), an id or a list, falling back to `config.json`'s. Never hard-coded: the
//! tiny fixtures put them elsewhere than the real checkpoints.

use crate::error::{EngineError, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct EosField {
    eos_token_id: Option<TokenIds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

/// The first of `generation_config.json` and `config.json` that names eos ids; none if neither
/// does (generation then stops at `max_new_tokens`, a stop string or the grammar's end).
pub fn eos_token_ids(model_dir: &Path) -> Result<Vec<i64>> {
    for file in ["generation_config.json", "config.json"] {
        let path = model_dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let field: EosField = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config(format!("{}: eos_token_id: {e}", path.display())))?;
        match field.eos_token_id {
            Some(TokenIds::One(id)) => return Ok(vec![id]),
            Some(TokenIds::Many(ids)) => return Ok(ids),
            None => continue,
        }
    }
    Ok(Vec::new())
}

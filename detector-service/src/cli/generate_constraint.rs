//! The `--json-schema` constraint of `slc-detector generate`: llguidance over the checkpoint's
//! tokenizer, so the printed text always parses and validates.

use anyhow::Context;
use slc_engine::generation::TokenConstraint;
use slc_engine::pipeline::VlmPipeline;
use std::path::Path;

pub fn json_schema_constraint(
    pipeline: &VlmPipeline,
    path: &Path,
) -> anyhow::Result<Box<dyn TokenConstraint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(Box::new(pipeline.json_schema_constraint(&schema)?))
}

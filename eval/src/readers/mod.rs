//! Evaluation files in, [`EvalItem`]s out. The format is recognised from the content; the
//! task from an explicit `KIND:` prefix or else the file name.

pub mod rap;
pub mod recognition;
pub mod slc_authors;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::items::{EvalItem, Task};

/// The recognition question when a file gives none; `{concept}` becomes `<id>`.
pub const DEFAULT_RECOGNITION_QUESTION: &str =
    "Is {concept} in this image? Answer with a single word or phrase.";

/// `--input [KIND:]PATH`, KIND one of rec, vqa, qa, sqa.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub task: Option<Task>,
    pub path: PathBuf,
}

impl FromStr for InputSpec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if let Some((kind, path)) = text.split_once(':') {
            let task = match kind {
                "rec" => Some(Task::Recognition),
                "vqa" => Some(Task::VisualMultipleChoice),
                "qa" => Some(Task::TextMultipleChoice),
                "sqa" => Some(Task::SpecialQuestions),
                _ => None,
            };
            if let Some(task) = task {
                return Ok(InputSpec {
                    task: Some(task),
                    path: PathBuf::from(path),
                });
            }
        }
        Ok(InputSpec {
            task: None,
            path: PathBuf::from(text),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReaderOptions {
    pub recognition_question: String,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            recognition_question: DEFAULT_RECOGNITION_QUESTION.to_string(),
        }
    }
}

/// A JSON object's entries in key order. Whether `serde_json::Map` keeps file order depends on
/// a feature other crates of the workspace may switch on, so the readers sort explicitly: item
/// ids and `--limit` must not change with the build.
pub fn sorted_entries(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::io(path, source))?;
    serde_json::from_str(&text).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's stem, used as the items' `source`.
pub fn source_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn task_from_file_name(path: &Path) -> Option<Task> {
    let name = source_name(path).to_lowercase();
    if name.contains("sqa") {
        Some(Task::SpecialQuestions)
    } else if name.starts_with("rec") || name.contains("recognition") {
        Some(Task::Recognition)
    } else if name.starts_with("vqa") || name.contains("visual") {
        Some(Task::VisualMultipleChoice)
    } else if name.starts_with("qa") || name.contains("text-only") || name.contains("text_only") {
        Some(Task::TextMultipleChoice)
    } else {
        None
    }
}

pub fn load_input(spec: &InputSpec, options: &ReaderOptions) -> Result<Vec<EvalItem>> {
    let json = read_json(&spec.path)?;
    let unknown = |detail: &str| EvalError::UnknownFormat {
        path: spec.path.clone(),
        detail: detail.to_string(),
    };
    if recognition::looks_like(&json) {
        return recognition::parse(&spec.path, &json, options);
    }
    let Value::Object(map) = &json else {
        return Err(unknown(
            "expected an object keyed by concept, or a recognition file",
        ));
    };
    let Some(first) = map.values().next() else {
        return Err(unknown("the file has no concepts"));
    };
    if first.is_array() {
        slc_authors::parse(&spec.path, map, spec.task, options)
    } else if first.is_object() {
        rap::parse(&spec.path, map, spec.task)
    } else {
        Err(unknown(
            "values must be lists ({conversations, images, gt}) or objects ({question, options, correct_answer})",
        ))
    }
}

/// `<id>` tags in order of appearance, without duplicates and without `<image>`.
pub fn concept_tags(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('>') else { break };
        let inner = &rest[..close];
        let valid = !inner.is_empty()
            && inner.len() <= 64
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid && inner != "image" && !found.iter().any(|f| f == inner) {
            found.push(inner.to_string());
        }
        if valid {
            rest = &rest[close + 1..];
        }
    }
    found
}

/// Removes the LLaVA `<image>` placeholder the authors' files put before the question.
pub fn strip_image_placeholder(text: &str) -> String {
    text.replace("<image>\n", "")
        .replace("<image>", "")
        .trim()
        .to_string()
}

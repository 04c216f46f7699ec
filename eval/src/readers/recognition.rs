//! Recognition files: which image, which concept, and whether it is there.
//!
//! The harness's own format (written by `slc-eval make-recognition` and by `run` when it is
//! given folders instead of a file):
//!
//! ```json
//! {"format": "slc-eval-recognition/1",
//!  "items": [{"image": "yollava/test/bo/0.jpg", "concept": "bo", "present": true,
//!             "split": "yollava", "question": null}]}
//! ```
//!
//! `image` is relative to the dataset root (or absolute); `split` groups the figures (e.g.
//! `yollava`, `mc_single`, `mc_multi`); `question` overrides the default question. A bare
//! JSON array of items is accepted too, including the RAP authors' `recognition_test.json`
//! (`correct_answer` for `present`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ReaderOptions, source_name, strip_image_placeholder};
use crate::error::{EvalError, Result};
use crate::items::{EvalItem, Expected, Task};

pub const FORMAT: &str = "slc-eval-recognition/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecognitionFile {
    pub format: String,
    pub items: Vec<RecognitionEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecognitionEntry {
    pub image: String,
    pub concept: String,
    #[serde(alias = "correct_answer")]
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

pub fn looks_like(json: &Value) -> bool {
    match json {
        Value::Object(map) => map
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| f.starts_with("slc-eval-recognition")),
        Value::Array(list) => list
            .first()
            .and_then(Value::as_object)
            .is_some_and(|o| o.contains_key("concept") && o.contains_key("image")),
        _ => false,
    }
}

pub fn parse(path: &Path, json: &Value, options: &ReaderOptions) -> Result<Vec<EvalItem>> {
    let list = match json {
        Value::Object(map) => {
            let format = map.get("format").and_then(Value::as_str).unwrap_or("");
            if format != FORMAT {
                return Err(EvalError::UnknownFormat {
                    path: path.to_path_buf(),
                    detail: format!("recognition format {format:?}; this harness reads {FORMAT:?}"),
                });
            }
            map.get("items").cloned().unwrap_or(Value::Array(vec![]))
        }
        other => other.clone(),
    };
    let Value::Array(list) = list else {
        return Err(EvalError::UnknownFormat {
            path: path.to_path_buf(),
            detail: "\"items\" must be a list".into(),
        });
    };
    let default_split = source_name(path);
    let mut items = Vec::with_capacity(list.len());
    for (index, raw) in list.into_iter().enumerate() {
        let id = format!("{default_split}:rec:{index}");
        let entry: RecognitionEntry = serde_json::from_value(raw).map_err(|e| {
            EvalError::bad_item(&id, format!("expected {{image, concept, present}}: {e}"))
        })?;
        let concept = entry
            .concept
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        let split = entry.split.clone().unwrap_or_else(|| default_split.clone());
        let question = match &entry.question {
            Some(q) => strip_image_placeholder(q),
            None => options
                .recognition_question
                .replace("{concept}", &format!("<{concept}>")),
        };
        items.push(EvalItem {
            id: format!("{split}:{concept}:{index}"),
            task: Task::Recognition,
            source: split,
            concepts: vec![concept],
            image_reference: Some(entry.image),
            image_path: None,
            original_question: question,
            expected: Expected::Presence {
                present: entry.present,
            },
        });
    }
    Ok(items)
}

/// Image files directly inside `folder`, sorted by name.
pub fn list_images(folder: &Path) -> Result<Vec<PathBuf>> {
    let reader = std::fs::read_dir(folder).map_err(|source| EvalError::io(folder, source))?;
    let mut images: Vec<PathBuf> = reader
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_lowercase().as_str(),
                        "png" | "jpg" | "jpeg" | "webp" | "bmp"
                    )
                })
        })
        .collect();
    images.sort();
    Ok(images)
}

/// Writes paths relative to `root` when they lie under it, so the file travels with the data.
fn reference_for(path: &Path, root: Option<&Path>) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(root) = root {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        if let Ok(relative) = absolute.strip_prefix(&root) {
            return relative.display().to_string();
        }
    }
    absolute.display().to_string()
}

/// One concept: every positive image is asked with `present: true`, every negative with
/// `present: false` (Yo'LLaVA's protocol with its LAION negatives).
pub fn from_folders(
    concept: &str,
    positives: &Path,
    negatives: &Path,
    split: &str,
    root: Option<&Path>,
) -> Result<RecognitionFile> {
    let mut items = Vec::new();
    for (folder, present) in [(positives, true), (negatives, false)] {
        let images = list_images(folder)?;
        if images.is_empty() {
            return Err(EvalError::Usage(format!(
                "no images (png/jpg/jpeg/webp/bmp) in {}",
                folder.display()
            )));
        }
        for image in images {
            items.push(RecognitionEntry {
                image: reference_for(&image, root),
                concept: concept.to_string(),
                present,
                split: Some(split.to_string()),
                question: None,
            });
        }
    }
    Ok(RecognitionFile {
        format: FORMAT.to_string(),
        items,
    })
}

/// The full Yo'LLaVA protocol from a `test/` folder with one sub-folder per concept: every
/// concept is asked about every test image, present only in its own folder.
pub fn from_test_folders(
    test_root: &Path,
    split: &str,
    root: Option<&Path>,
) -> Result<RecognitionFile> {
    let reader = std::fs::read_dir(test_root).map_err(|source| EvalError::io(test_root, source))?;
    let mut concept_folders: Vec<PathBuf> = reader
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    concept_folders.sort();
    let mut images_by_concept = Vec::new();
    for folder in &concept_folders {
        let concept = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        images_by_concept.push((concept, list_images(folder)?));
    }
    let mut items = Vec::new();
    for (concept, _) in &images_by_concept {
        for (owner, images) in &images_by_concept {
            for image in images {
                items.push(RecognitionEntry {
                    image: reference_for(image, root),
                    concept: concept.clone(),
                    present: owner == concept,
                    split: Some(split.to_string()),
                    question: None,
                });
            }
        }
    }
    Ok(RecognitionFile {
        format: FORMAT.to_string(),
        items,
    })
}

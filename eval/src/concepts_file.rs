//! The concepts to register before a run, in the RAP/SLC `database.json` format:
//! `{"concept_dict": {"<bo>": {name, image, info, category}}}` with `image` relative to the
//! file's folder. `images` (a list) is accepted as well, for concepts with several
//! reference photos (the real Yo'LLaVA evaluation registers its `train/<concept>/` images).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{EvalError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ConceptToRegister {
    /// Bare id, e.g. `bo`.
    pub id: String,
    pub description: String,
    pub category: Option<String>,
    pub image_paths: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct DatabaseFile {
    concept_dict: BTreeMap<String, DatabaseEntry>,
}

#[derive(Debug, Deserialize)]
struct DatabaseEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<ImageField>,
    #[serde(default)]
    images: Vec<String>,
    info: String,
    #[serde(default)]
    category: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ImageField {
    One(String),
    Many(Vec<String>),
}

pub fn load_concepts_file(path: &Path) -> Result<Vec<ConceptToRegister>> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::io(path, source))?;
    let file: DatabaseFile = serde_json::from_str(&text).map_err(|e| EvalError::ConceptsFile {
        path: path.to_path_buf(),
        message: format!(
            "expected {{\"concept_dict\": {{\"<id>\": {{name, image, info, category}}}}}}: {e}"
        ),
    })?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut concepts = Vec::new();
    for (key, entry) in file.concept_dict {
        let id = entry.name.clone().unwrap_or_else(|| {
            key.trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        });
        let mut references: Vec<String> = match entry.image {
            Some(ImageField::One(one)) => vec![one],
            Some(ImageField::Many(many)) => many,
            None => vec![],
        };
        references.extend(entry.images);
        if references.is_empty() {
            return Err(EvalError::ConceptsFile {
                path: path.to_path_buf(),
                message: format!("concept {key} has no image"),
            });
        }
        let mut image_paths = Vec::new();
        for reference in references {
            let image_path = folder.join(&reference);
            if !image_path.is_file() {
                return Err(EvalError::ConceptsFile {
                    path: path.to_path_buf(),
                    message: format!(
                        "concept {key}: reference image {} does not exist",
                        image_path.display()
                    ),
                });
            }
            image_paths.push(image_path);
        }
        concepts.push(ConceptToRegister {
            id,
            description: entry.info,
            category: entry.category,
            image_paths,
        });
    }
    Ok(concepts)
}

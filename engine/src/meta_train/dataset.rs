//! Concept datasets for meta-training, one folder per concept:
//!
//! ```text
//! DATASET/<concept>/description.txt     one or a few sentences about the concept (required)
//! DATASET/<concept>/*.jpg|jpeg|png|webp reference images (at least one)
//! DATASET/<concept>/conversations.json  LLaVA-style training conversations (required):
//!   [{"conversations": [{"from": "system"|"human"|"assistant", "value": "…"}],
//!     "images": ["relative/to/the/concept/folder.jpg"]}]
//! ```
//! The format of the conversations is the SLC authors' (`../shared/data/train/slc/*.json`):
//! `<image>` in a human turn marks where each listed image goes, and the system turn carries the
//! concept description. A conversation without a system turn gets
//! `You are a helpful assistant. <description>`, so the description is always in the prompt
//! (Table 2's best setting).

use crate::error::{EngineError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DESCRIPTION_FILE: &str = "description.txt";
pub const CONVERSATIONS_FILE: &str = "conversations.json";
const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

#[derive(Debug, Clone, Deserialize)]
pub struct Turn {
    pub from: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub conversations: Vec<Turn>,
    #[serde(default)]
    pub images: Vec<String>,
}

/// One concept folder, read and checked.
#[derive(Debug, Clone)]
pub struct ConceptDataset {
    /// The folder name, e.g. `bo`.
    pub name: String,
    pub folder: PathBuf,
    pub description: String,
    /// Reference images, sorted by file name.
    pub reference_images: Vec<PathBuf>,
    pub conversations: Vec<Conversation>,
}

fn dataset_error(path: &Path, message: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidInput(format!("{}: {message}", path.display()))
}

impl ConceptDataset {
    pub fn read(folder: &Path) -> Result<Self> {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| dataset_error(folder, "not a concept folder"))?;
        let description = read_description(folder, &name)?;
        let reference_images = reference_images(folder, &name)?;
        let conversations = read_conversations(folder, &name)?;
        Ok(ConceptDataset {
            name,
            folder: folder.to_path_buf(),
            description,
            reference_images,
            conversations,
        })
    }
}

fn read_description(folder: &Path, name: &str) -> Result<String> {
    let description_path = folder.join(DESCRIPTION_FILE);
    let description = std::fs::read_to_string(&description_path)
        .map_err(|_| {
            dataset_error(
                folder,
                format!("concept `{name}` has no {DESCRIPTION_FILE}"),
            )
        })?
        .trim()
        .to_string();
    if description.is_empty() {
        return Err(dataset_error(
            &description_path,
            format!("concept `{name}` has an empty description"),
        ));
    }
    Ok(description)
}

/// The folder's images, sorted by path.
fn reference_images(folder: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let mut reference_images: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| dataset_error(folder, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    reference_images.sort();
    if reference_images.is_empty() {
        return Err(dataset_error(
            folder,
            format!("concept `{name}` has no reference images (.jpg, .jpeg, .png, .webp, .bmp)"),
        ));
    }
    Ok(reference_images)
}

/// `conversations.json`, each conversation checked (placeholders, an assistant turn, images).
fn read_conversations(folder: &Path, name: &str) -> Result<Vec<Conversation>> {
    let conversations_path = folder.join(CONVERSATIONS_FILE);
    let text = std::fs::read_to_string(&conversations_path).map_err(|_| {
        dataset_error(
            folder,
            format!("concept `{name}` has no {CONVERSATIONS_FILE}"),
        )
    })?;
    let conversations: Vec<Conversation> = serde_json::from_str(&text).map_err(|e| {
        dataset_error(
            &conversations_path,
            format!("not LLaVA-style conversations: {e}"),
        )
    })?;
    if conversations.is_empty() {
        return Err(dataset_error(&conversations_path, "no conversations"));
    }
    for (index, conversation) in conversations.iter().enumerate() {
        let placeholders: usize = conversation
            .conversations
            .iter()
            .map(|t| t.value.matches("<image>").count())
            .sum();
        if placeholders != conversation.images.len() {
            return Err(dataset_error(
                &conversations_path,
                format!(
                    "conversation {index} has {placeholders} <image> placeholders but {} images",
                    conversation.images.len()
                ),
            ));
        }
        if !conversation
            .conversations
            .iter()
            .any(|t| t.from == "assistant" || t.from == "gpt")
        {
            return Err(dataset_error(
                &conversations_path,
                format!("conversation {index} has no assistant turn"),
            ));
        }
        for image in &conversation.images {
            if !folder.join(image).is_file() {
                return Err(dataset_error(
                    &conversations_path,
                    format!(
                        "conversation {index} names image `{image}`, which is not in the concept folder"
                    ),
                ));
            }
        }
    }
    Ok(conversations)
}

/// Every concept folder under `root`, sorted by name.
pub fn read_concept_datasets(root: &Path) -> Result<Vec<ConceptDataset>> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| dataset_error(root, format!("cannot read the dataset folder: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    if folders.is_empty() {
        return Err(dataset_error(root, "no concept folders"));
    }
    folders.iter().map(|f| ConceptDataset::read(f)).collect()
}

//! The SLC authors' files (`data/eval/{yollava_eval,mc_eval}/*.json`):
//! `{group: [{conversations: [system, human, assistant], images?: [path], gt | is_positive}]}`.
//! The system turn carries the authors' descriptions; the harness ignores it because the
//! edge answers from the registered concepts' own descriptions.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    ReaderOptions, concept_tags, source_name, strip_image_placeholder, task_from_file_name,
};
use crate::error::{EvalError, Result};
use crate::items::{EvalItem, Expected, Task, letter_index};
use crate::options::split_choices;

#[derive(Debug, Deserialize)]
struct AuthorsItem {
    conversations: Vec<Turn>,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    gt: Option<String>,
    #[serde(default)]
    is_positive: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Turn {
    from: String,
    value: String,
}

pub fn parse(
    path: &Path,
    map: &Map<String, Value>,
    task_override: Option<Task>,
    _options: &ReaderOptions,
) -> Result<Vec<EvalItem>> {
    let source = source_name(path);
    let file_task = task_override.or_else(|| task_from_file_name(path));
    let mut items = Vec::new();
    for (group, list) in super::sorted_entries(map) {
        let Value::Array(list) = list else {
            return Err(EvalError::UnknownFormat {
                path: path.to_path_buf(),
                detail: format!("group {group:?} is not a list"),
            });
        };
        for (index, raw) in list.iter().enumerate() {
            let id = format!("{source}:{group}:{index}");
            let parsed: AuthorsItem = serde_json::from_value(raw.clone()).map_err(|e| {
                EvalError::bad_item(
                    &id,
                    format!(
                        "expected {{conversations, images, gt}} in {}: {e}",
                        path.display()
                    ),
                )
            })?;
            items.push(convert(&id, &source, group, parsed, file_task)?);
        }
    }
    Ok(items)
}

fn convert(
    id: &str,
    source: &str,
    group: &str,
    item: AuthorsItem,
    file_task: Option<Task>,
) -> Result<EvalItem> {
    let human = item
        .conversations
        .iter()
        .find(|turn| turn.from == "human" || turn.from == "user")
        .ok_or_else(|| EvalError::bad_item(id, "no human turn in conversations"))?;
    let question = strip_image_placeholder(&human.value);
    let system = item
        .conversations
        .iter()
        .find(|turn| turn.from == "system")
        .map(|turn| turn.value.as_str())
        .unwrap_or("");
    let mut concepts = concept_tags(&question);
    if concepts.is_empty() {
        concepts = concept_tags(system);
    }
    if concepts.is_empty() {
        concepts = vec![group.to_string()];
    }
    let image_reference = item.images.first().cloned();
    let task = if item.is_positive.is_some() {
        Task::Recognition
    } else {
        match file_task {
            Some(task) => task,
            None if image_reference.is_some() => Task::VisualMultipleChoice,
            None => Task::TextMultipleChoice,
        }
    };
    let expected = if let Some(present) = item.is_positive {
        Expected::Presence { present }
    } else {
        let gt = item
            .gt
            .as_deref()
            .ok_or_else(|| EvalError::bad_item(id, "no \"gt\" answer"))?;
        choice_expected(id, &question, gt)?
    };
    if task == Task::Recognition && matches!(expected, Expected::Choice { .. }) {
        return Err(EvalError::bad_item(
            id,
            "read as recognition, but the item has a \"gt\" option instead of \"is_positive\"",
        ));
    }
    if task != Task::TextMultipleChoice && task != Task::Recognition && image_reference.is_none() {
        return Err(EvalError::bad_item(
            id,
            "a visual question without an image",
        ));
    }
    Ok(EvalItem {
        id: id.to_string(),
        task,
        source: source.to_string(),
        concepts,
        image_reference: if task == Task::TextMultipleChoice {
            None
        } else {
            image_reference
        },
        image_path: None,
        original_question: question,
        expected,
    })
}

/// Splits "stem A. x. B. y.\nRULE: …" and checks the key names one of the options.
pub fn choice_expected(id: &str, question: &str, gt: &str) -> Result<Expected> {
    let (body, instruction) = match question.split_once("\nRULE:") {
        Some((body, rule)) => (body.trim(), Some(format!("RULE:{rule}").trim().to_string())),
        None => (question.trim(), None),
    };
    let (stem, options) = split_choices(body).ok_or_else(|| {
        EvalError::bad_item(id, format!("cannot find options \"A. … B. …\" in {body:?}"))
    })?;
    let gt = gt.trim().trim_end_matches('.');
    let correct = gt
        .chars()
        .next()
        .filter(|_| gt.len() == 1)
        .and_then(letter_index)
        .filter(|&index| index < options.len())
        .ok_or_else(|| {
            EvalError::bad_item(
                id,
                format!(
                    "answer key {gt:?} is not one of the {} options",
                    options.len()
                ),
            )
        })?;
    Ok(Expected::Choice {
        stem,
        options,
        correct,
        instruction,
    })
}

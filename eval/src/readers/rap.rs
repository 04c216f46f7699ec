//! The RAP authors' copies of the Yo'LLaVA question sets (`RAP-MLLM/eval/yollava-*-qa.json`):
//! `{concept: {image_path_or_index: {question, options | option, correct_answer}}}`. The
//! visual file says `options`, the text-only file says `option`; both are accepted. Questions
//! name the concept `sks`, which becomes `<concept>`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{source_name, task_from_file_name};
use crate::error::{EvalError, Result};
use crate::items::{EvalItem, Expected, Task, letter_index};
use crate::options::render_choice_question;

/// The instruction the SLC authors' files append; used so both readers ask alike.
pub const CHOICE_INSTRUCTION: &str =
    "RULE: Answer this multi-choice question using a single letter.";

#[derive(Debug, Deserialize)]
struct RapQuestion {
    question: String,
    #[serde(alias = "option")]
    options: BTreeMap<String, String>,
    correct_answer: String,
}

pub fn parse(
    path: &Path,
    map: &Map<String, Value>,
    task_override: Option<Task>,
) -> Result<Vec<EvalItem>> {
    let source = source_name(path);
    let mut items = Vec::new();
    for (concept, questions) in super::sorted_entries(map) {
        let Value::Object(questions) = questions else {
            return Err(EvalError::UnknownFormat {
                path: path.to_path_buf(),
                detail: format!("concept {concept:?} does not map to an object of questions"),
            });
        };
        for (index, (key, raw)) in super::sorted_entries(questions).into_iter().enumerate() {
            let id = format!("{source}:{concept}:{index}");
            let parsed: RapQuestion = serde_json::from_value(raw.clone()).map_err(|e| {
                EvalError::bad_item(
                    &id,
                    format!(
                        "expected {{question, options (or option), correct_answer}} in {}: {e}",
                        path.display()
                    ),
                )
            })?;
            let key_is_image = looks_like_image_path(key);
            let task = task_override
                .or_else(|| task_from_file_name(path))
                .unwrap_or(if key_is_image {
                    Task::VisualMultipleChoice
                } else {
                    Task::TextMultipleChoice
                });
            if task == Task::Recognition {
                return Err(EvalError::bad_item(
                    &id,
                    "RAP question files hold multiple-choice questions, not recognition",
                ));
            }
            let visual = task != Task::TextMultipleChoice;
            if visual && !key_is_image {
                return Err(EvalError::bad_item(
                    &id,
                    format!("a visual question keyed by {key:?}, which is not an image path"),
                ));
            }
            let tag = format!("<{concept}>");
            let stem = replace_word(&parsed.question, "sks", &tag);
            let letters: Vec<&String> = parsed.options.keys().collect();
            let options: Vec<String> = parsed.options.values().cloned().collect();
            for (i, letter) in letters.iter().enumerate() {
                if letter.chars().next().and_then(letter_index) != Some(i) || letter.len() != 1 {
                    return Err(EvalError::bad_item(
                        &id,
                        format!("option keys must be A, B, C, … in order, got {letters:?}"),
                    ));
                }
            }
            let answer = parsed.correct_answer.trim();
            let correct = letters
                .iter()
                .position(|letter| letter.as_str() == answer)
                .ok_or_else(|| {
                    EvalError::bad_item(
                        &id,
                        format!("correct_answer {answer:?} is not an option key"),
                    )
                })?;
            items.push(EvalItem {
                id,
                task,
                source: source.clone(),
                concepts: vec![concept.clone()],
                image_reference: visual.then(|| key.clone()),
                image_path: None,
                original_question: render_choice_question(
                    &stem,
                    &options,
                    Some(CHOICE_INSTRUCTION),
                ),
                expected: Expected::Choice {
                    stem,
                    options,
                    correct,
                    instruction: Some(CHOICE_INSTRUCTION.to_string()),
                },
            });
        }
    }
    Ok(items)
}

fn looks_like_image_path(key: &str) -> bool {
    let lower = key.to_lowercase();
    [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
        .iter()
        .any(|extension| lower.ends_with(extension))
}

/// Replaces `word` where it stands alone (not inside "asks" or "sksx").
pub fn replace_word(text: &str, word: &str, replacement: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(position) = rest.find(word) {
        let before = rest[..position].chars().last().or(previous);
        let after = rest[position + word.len()..].chars().next();
        let standalone =
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..position]);
        out.push_str(if standalone { replacement } else { word });
        previous = word.chars().last();
        rest = &rest[position + word.len()..];
    }
    out.push_str(rest);
    out
}

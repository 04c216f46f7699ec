//! The harness's own model of one evaluation question, whatever file it came from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The paper's evaluation protocols (Table 1 columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// "Is <bo> in this image?" scored by yes-recall, no-recall and their mean.
    Recognition,
    /// Multiple choice about an image (VQA).
    VisualMultipleChoice,
    /// Multiple choice without an image (text-only QA).
    TextMultipleChoice,
    /// The SLC authors' special questions that contradict the reference images.
    SpecialQuestions,
}

impl Task {
    pub fn label(self) -> &'static str {
        match self {
            Task::Recognition => "Rec.",
            Task::VisualMultipleChoice => "VQA",
            Task::TextMultipleChoice => "Text-only",
            Task::SpecialQuestions => "SQA",
        }
    }
}

/// What counts as the right answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Expected {
    /// Recognition: whether the concept is in the image.
    Presence { present: bool },
    /// Multiple choice in the file's own order; `correct` indexes `options`.
    Choice {
        /// The question without its options, e.g. "What is <bo>'s breed?".
        stem: String,
        options: Vec<String>,
        correct: usize,
        /// The instruction line that follows the options, e.g. "RULE: Answer … single letter."
        instruction: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    /// Stable and unique within a run: `{source}:{group}:{index}`.
    pub id: String,
    pub task: Task,
    /// Which file (stem) or recognition split the item came from, e.g. `vqa_single`.
    pub source: String,
    /// Bare concept ids the question is about, e.g. `["bo"]`.
    pub concepts: Vec<String>,
    /// The image reference as the file wrote it (e.g. `yollava-data/test/bo/3.png`).
    pub image_reference: Option<String>,
    /// Filled in by [`crate::dataset_root::DatasetRoot::resolve_items`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_path: Option<PathBuf>,
    /// The question exactly as the file phrased it (options included, `<image>` removed).
    pub original_question: String,
    pub expected: Expected,
}

pub fn option_letter(index: usize) -> char {
    (b'A' + index as u8) as char
}

pub fn letter_index(letter: char) -> Option<usize> {
    letter
        .is_ascii_uppercase()
        .then(|| (letter as u8 - b'A') as usize)
}

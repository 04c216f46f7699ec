//! Turning a model's free text into a verdict, two ways.
//!
//! Strict (the default): the first standalone "yes"/"no" word, or the first standalone
//! uppercase option letter within range; for choices, an answer that is exactly one option's
//! text also counts. Anything else is unparseable, scored wrong and reported separately.
//!
//! Lenient (the SLC authors' `yollava_eval_s_l_model.py`, for comparison with the paper):
//! lower-case substring tests: `"yes" in answer` for positives, `"no" in answer` for negatives
//! (so "not" and "I don't know" count as "no"), and `gt.lower() in answer` for choices (so any
//! answer containing the letter "a" is right when the key is A).

use serde::{Deserialize, Serialize};

use crate::items::letter_index;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Parsed {
    Yes,
    No,
    /// Index into the options as shown.
    Choice(usize),
    Unparseable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    #[default]
    Strict,
    Lenient,
}

fn words(answer: &str) -> impl Iterator<Item = &str> {
    answer
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
}

pub fn parse_yes_no(answer: &str) -> Parsed {
    for word in words(answer.trim()) {
        match word.to_lowercase().as_str() {
            "yes" => return Parsed::Yes,
            "no" => return Parsed::No,
            _ => {}
        }
    }
    Parsed::Unparseable
}

pub fn parse_choice(answer: &str, shown_options: &[String]) -> Parsed {
    let answer = answer.trim();
    for word in words(answer) {
        let mut chars = word.chars();
        if let (Some(letter), None) = (chars.next(), chars.next())
            && let Some(index) = letter_index(letter)
            && index < shown_options.len()
        {
            return Parsed::Choice(index);
        }
    }
    let bare = answer.trim_end_matches('.').trim().to_lowercase();
    let matching: Vec<usize> = shown_options
        .iter()
        .enumerate()
        .filter(|(_, option)| option.to_lowercase() == bare)
        .map(|(i, _)| i)
        .collect();
    match matching.as_slice() {
        [only] => Parsed::Choice(*only),
        _ => Parsed::Unparseable,
    }
}

pub fn lenient_presence_correct(answer: &str, present: bool) -> bool {
    let answer = answer.trim().to_lowercase();
    if present {
        answer.contains("yes")
    } else {
        answer.contains("no")
    }
}

pub fn lenient_choice_correct(answer: &str, correct_letter: char) -> bool {
    answer
        .trim()
        .to_lowercase()
        .contains(correct_letter.to_ascii_lowercase())
}

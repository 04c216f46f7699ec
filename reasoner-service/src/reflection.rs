//! Test-time reflection's pure parts (paper section 3.2.2): which yes/no questions to ask, the
//! strict parse of the large model's answers, and the refinement rule.
//!
//! Rule: two "no" → `present = false`; one "no" → drop the location it was asked about;
//! "yes" keeps the cue unchanged. A location the edge left empty is not asked about, so a
//! concept with one location can lose that location but is never suppressed by one answer,
//! and a concept with none is kept as the edge reported it.

use shared_types::{Cue, Identity, ReflectionAction, VerifiedField, YesNo};

use crate::prompts::{
    location_absolute_question, location_relative_question, non_empty, presence_question,
};

/// One question of Table 8 before it is numbered into a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedQuestion {
    pub concept: String,
    pub about: VerifiedField,
    /// The category the identity step extracted: the paper's `ID(C)`.
    pub identity: String,
    pub location: String,
}

impl PlannedQuestion {
    /// The question's text with its number in the prompt (`Q1.`, `Q2.`, …).
    pub fn text(&self, number: usize) -> String {
        match self.about {
            VerifiedField::LocationAbsolute => {
                location_absolute_question(number, &self.identity, &self.location)
            }
            VerifiedField::LocationRelative => {
                location_relative_question(number, &self.identity, &self.location)
            }
            VerifiedField::Presence => presence_question(number, &self.identity),
        }
    }
}

/// The second look at a concept the question names but the edge reported absent.
pub fn presence_recheck(concept: &str, identity: &Identity) -> PlannedQuestion {
    PlannedQuestion {
        concept: concept.to_owned(),
        about: VerifiedField::Presence,
        identity: identity.category.clone(),
        location: String::new(),
    }
}

/// The rechecked concept's outcome: "yes" marks it present with no location (the model was
/// not asked where), anything else leaves it absent.
pub fn recheck_outcome(answer: Option<YesNo>) -> (Cue, ReflectionAction) {
    match answer {
        Some(YesNo::Yes) => (
            Cue {
                present: true,
                ..Cue::default()
            },
            ReflectionAction::Recovered,
        ),
        _ => (absent_cue(), ReflectionAction::NotPresent),
    }
}

/// The questions for one concept the edge reported present: Q1 about location-absolute, Q2
/// about location-relative, each only when the edge gave that location.
pub fn plan_questions(concept: &str, identity: &Identity, cue: &Cue) -> Vec<PlannedQuestion> {
    if !cue.present {
        return Vec::new();
    }
    let mut questions = Vec::with_capacity(2);
    if let Some(location) = non_empty(cue.location_absolute.as_deref()) {
        questions.push(PlannedQuestion {
            concept: concept.to_owned(),
            about: VerifiedField::LocationAbsolute,
            identity: identity.category.clone(),
            location,
        });
    }
    if let Some(location) = non_empty(cue.location_relative.as_deref()) {
        questions.push(PlannedQuestion {
            concept: concept.to_owned(),
            about: VerifiedField::LocationRelative,
            identity: identity.category.clone(),
            location,
        });
    }
    questions
}

/// `response_format` for upstreams with structured output: `{"Q1": "yes"|"no", ...}` for
/// `questions` numbered questions. The strict parse below reads it like free text (the k-th
/// standalone yes/no answers question k); what it buys is decoding: a model under this schema
/// cannot ramble, and a constrained local model gets every key for free.
pub fn verification_response_format(questions: usize) -> serde_json::Value {
    let keys: Vec<String> = (1..=questions).map(|n| format!("Q{n}")).collect();
    let properties: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|key| (key.clone(), serde_json::json!({"enum": ["yes", "no"]})))
        .collect();
    serde_json::json!({
        "type": "json_schema",
        "json_schema": {
            "name": "verification_answers",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": keys,
                "additionalProperties": false,
            },
        },
    })
}

/// The strict parse of a reply to `expected` numbered questions: the k-th standalone "yes" or
/// "no" (case-insensitive, delimited by anything that is not a letter or digit) answers
/// question k. A question with no such word left counts as "no", so "yesterday", "maybe" or
/// an empty reply never confirm a cue.
pub fn parse_yes_no_answers(reply: &str, expected: usize) -> Vec<YesNo> {
    // A structured reply names its answers: read them by key, whatever order they come in.
    if let Ok(serde_json::Value::Object(answers)) = serde_json::from_str(reply.trim()) {
        return (1..=expected)
            .map(
                |n| match answers.get(&format!("Q{n}")).and_then(|v| v.as_str()) {
                    Some(answer) if answer.eq_ignore_ascii_case("yes") => YesNo::Yes,
                    _ => YesNo::No,
                },
            )
            .collect();
    }
    let mut words = reply
        .split(|character: char| !character.is_alphanumeric())
        .filter_map(|word| {
            if word.eq_ignore_ascii_case("yes") {
                Some(YesNo::Yes)
            } else if word.eq_ignore_ascii_case("no") {
                Some(YesNo::No)
            } else {
                None
            }
        });
    (0..expected)
        .map(|_| words.next().unwrap_or(YesNo::No))
        .collect()
}

/// The refinement rule for one concept: the cue after reflection and what was done to it.
/// `absolute` and `relative` are the parsed answers to the questions asked (`None` when that
/// location was not asked about).
pub fn refine_cue(
    cue: &Cue,
    absolute: Option<YesNo>,
    relative: Option<YesNo>,
) -> (Cue, ReflectionAction) {
    if !cue.present {
        return (absent_cue(), ReflectionAction::NotPresent);
    }
    // An empty location string says nothing; it leaves the refined cue as a missing key.
    let cue = &Cue {
        present: true,
        location_absolute: non_empty(cue.location_absolute.as_deref()),
        location_relative: non_empty(cue.location_relative.as_deref()),
        bbox: cue.bbox,
    };
    match (absolute, relative) {
        (Some(YesNo::No), Some(YesNo::No)) => (absent_cue(), ReflectionAction::Suppressed),
        (Some(YesNo::No), _) => (
            Cue {
                present: true,
                location_absolute: None,
                location_relative: cue.location_relative.clone(),
                bbox: cue.bbox,
            },
            ReflectionAction::DroppedLocationAbsolute,
        ),
        (_, Some(YesNo::No)) => (
            Cue {
                present: true,
                location_absolute: cue.location_absolute.clone(),
                location_relative: None,
                bbox: cue.bbox,
            },
            ReflectionAction::DroppedLocationRelative,
        ),
        _ => (cue.clone(), ReflectionAction::Kept),
    }
}

/// Table 6: a concept that is not present carries no other keys.
pub fn absent_cue() -> Cue {
    Cue::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kth_standalone_word_answers_question_k() {
        use YesNo::{No, Yes};
        let cases: &[(&str, usize, &[YesNo])] = &[
            ("yes", 1, &[Yes]),
            ("Yes.", 1, &[Yes]),
            ("NO", 1, &[No]),
            ("yes no", 2, &[Yes, No]),
            ("q1. yes\nq2. yes", 2, &[Yes, Yes]),
            ("q1. no\nq2. no", 2, &[No, No]),
            ("yesterday", 1, &[No]),
            ("maybe", 1, &[No]),
            ("", 2, &[No, No]),
            ("yes", 2, &[Yes, No]),
            ("Nope, yes", 1, &[Yes]),
            ("yes, no, yes", 2, &[Yes, No]),
        ];
        for (reply, expected, answers) in cases {
            assert_eq!(
                parse_yes_no_answers(reply, *expected),
                *answers,
                "reply {reply:?}"
            );
        }
    }
}

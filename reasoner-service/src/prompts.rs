//! The paper's prompts for the large VLM, verbatim from appendix B (Tables 7, 8 and 9) and the
//! text-only protocol of appendix D.
//!
//! The PDF's typesetting is undone and nothing else: LaTeX angle brackets are written `<` and
//! `>`, bold markers are dropped, the paper's typographic quotes and dashes are kept. Table 8's
//! "Rules" sit in the system prompt, the same place as Tables 6 and 7 put theirs, so the user
//! turn holds only the questions.

use std::collections::BTreeMap;

use serde::Serialize;
use shared_types::{ConceptDescription, Cue, Identity};

/// Table 7, system prompt.
pub const IDENTITY_SYSTEM_PROMPT: &str = "You are an information extractor.

Task
Inspect the textual descriptions below and return one JSON object that covers every concept in the Concept List while conforming to the schema:
- “category”: permanent class, e.g. “a golden retriever puppy”, “a blue cartoon character”
- “attributes”: mutable traits, e.g. “always playful expression; dresses in trendy clothes”

Example
User prompt
Concept List:
<bo>: <bo> is a cute golden retriever puppy with a playful expression.
<shiba-sleep>: <shiba-sleep> is a shiba inu sleeping peacefully in a cozy home.

Expected output
{
  \"<bo>\": {
    \"category\": \"a golden retriever puppy\",
    \"attributes\": \"always playful expression\"
  },
  \"<shiba-sleep>\": {
    \"category\": \"a shiba inu\",
    \"attributes\": \"can sleep peacefully; lives in cozy home\"
  }
}

Rules
- Output plain English text only—no Markdown, no code fences.
- Keep every concept ID enclosed in angle brackets (<>).
- Provide exactly the two keys for each concept—no extras.
- Do not add comments or explanatory text outside the JSON object.";

/// Table 8, system prompt (task and rules).
pub const VERIFICATION_SYSTEM_PROMPT: &str = "You are a visual verifier.

Task
You should answer each visual question with yes or no—nothing else.

Rules
- Provide exactly one “yes” or “no” per question.
- If there are N questions, output N tokens separated by a single space.
- Do not include any additional words, punctuation, or commentary.";

/// Table 9, the rules that follow the detection report in the system prompt.
pub const ANSWER_RULES: &str = "Rules
Use the Detection Report to answer the user’s visual question.
- category: immutable essence (e.g. “a golden retriever puppy”).
- attributes: mutable traits that may or may not be visible (e.g. “always playful expression”).
- If present = false, it means the concept is not in the image. You should not mention the concept; reply “no” if asked about its presence.
- If present = true, it means it concept is in the image. You should ground your answer strictly on the provided fields; reply “yes” if asked about its presence.";

/// The fallback identity the authors use when the model's output cannot be used.
pub const FALLBACK_CATEGORY: &str = "A character or object.";

/// Table 7, user prompt: `Concept List` then one `<id>: description` line per concept.
pub fn identity_user_prompt(concepts: &[&ConceptDescription]) -> String {
    let mut prompt = String::from("Concept List\n");
    for concept in concepts {
        prompt.push_str(&format!("{}: {}\n", concept.id, concept.description));
    }
    prompt.truncate(prompt.trim_end().len());
    prompt
}

/// Table 8, Q1: whether the identity is at the reported absolute location.
pub fn location_absolute_question(number: usize, identity: &str, location: &str) -> String {
    let (identity, location) = (inline(identity), inline(location));
    format!("Q{number}. Do you see {identity} at {location} of the image? (yes or no)")
}

/// Table 8, Q2: whether the identity stands in the reported relation.
pub fn location_relative_question(number: usize, identity: &str, location: &str) -> String {
    let (identity, location) = (inline(identity), inline(location));
    format!("Q{number}. Is {identity} {location}? (yes or no)")
}

/// The second look at a miss (`recheck_mentioned`, beyond the paper), in Table 8's form:
/// whether the identity is in the image at all.
pub fn presence_question(number: usize, identity: &str) -> String {
    let identity = inline(identity);
    format!("Q{number}. Do you see {identity} in the image? (yes or no)")
}

/// Text from a description or a cue, made fit to sit inside one numbered question: one line
/// (line breaks and control characters become spaces) and no question markers of its own
/// (`Q2.`, `q10:` are dropped). Otherwise an identity such as `a dog? (yes or no)\nQ2. Is the
/// sky blue` adds a question, and every answer after it is read against the wrong one.
pub fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while index < chars.len() {
        let at_word_start = index == 0 || !chars[index - 1].is_alphanumeric();
        let digits = chars[index + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if at_word_start && matches!(chars[index], 'Q' | 'q') && digits > 0 {
            index += 1 + digits;
            if chars
                .get(index)
                .is_some_and(|c| matches!(c, '.' | ':' | ')'))
            {
                index += 1;
            }
            continue;
        }
        let c = chars[index];
        out.push(if c.is_control() { ' ' } else { c });
        index += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Table 8, user prompt: the numbered questions, one per line.
pub fn verification_user_prompt(questions: &[String]) -> String {
    questions.join("\n")
}

/// One concept's entry in Table 9's detection report:
/// `{present, category, attributes, location-absolute, location-relative}`. A location the
/// reflection dropped (or the edge never gave) is omitted, as Table 6 omits keys for absent
/// concepts. `present` is omitted when no detector ran (mode `no_detector`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionReportEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    pub category: String,
    pub attributes: String,
    #[serde(rename = "location-absolute", skip_serializing_if = "Option::is_none")]
    pub location_absolute: Option<String>,
    #[serde(rename = "location-relative", skip_serializing_if = "Option::is_none")]
    pub location_relative: Option<String>,
}

impl DetectionReportEntry {
    pub fn from_cue(identity: &Identity, cue: &Cue) -> Self {
        let keep_locations = cue.present;
        Self {
            present: Some(cue.present),
            category: identity.category.clone(),
            attributes: identity.attributes.clone(),
            location_absolute: non_empty(cue.location_absolute.as_deref())
                .filter(|_| keep_locations),
            location_relative: non_empty(cue.location_relative.as_deref())
                .filter(|_| keep_locations),
        }
    }

    pub fn identity_only(identity: &Identity) -> Self {
        Self {
            present: None,
            category: identity.category.clone(),
            attributes: identity.attributes.clone(),
            location_absolute: None,
            location_relative: None,
        }
    }
}

/// A location string that says something, or `None` for a missing or empty one.
pub fn non_empty(location: Option<&str>) -> Option<String> {
    location
        .map(str::trim)
        .filter(|location| !location.is_empty())
        .map(str::to_owned)
}

/// Table 9, system prompt: `Detection Report`, the report as JSON, then the rules.
pub fn answer_system_prompt(report: &BTreeMap<String, DetectionReportEntry>) -> String {
    let report = serde_json::to_string_pretty(report).expect("a map of strings serializes");
    format!("Detection Report\n{report}\n\n{ANSWER_RULES}")
}

/// Appendix D, the text-only protocol: the structured category/attributes fields, then the
/// user's question. Also the user turn of mode `no_detector`, which has identities but no cues.
pub fn identity_structured_prompt(
    identities: &BTreeMap<String, Identity>,
    question: &str,
) -> String {
    let fields = serde_json::to_string_pretty(identities).expect("a map of strings serializes");
    format!("{fields}\n\n{question}")
}

/// Mode `pure` (Table 5's last row, the paper's "LLaVA + text prompt"): each concept's raw
/// description concatenated with the question.
pub fn raw_description_prompt(concepts: &[ConceptDescription], question: &str) -> String {
    let mut prompt = String::new();
    for concept in concepts {
        prompt.push_str(&format!("{}: {}\n", concept.id, concept.description));
    }
    if !prompt.is_empty() {
        prompt.push('\n');
    }
    prompt.push_str(question);
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_text_cannot_add_a_question() {
        let injected = "a dog? (yes or no)\nQ2. Is the sky blue? q3: yes";
        let question = location_absolute_question(1, injected, "the left\r\nQ4)");
        assert_eq!(question.matches(['\n', '\r']).count(), 0, "{question}");
        let markers = question
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| {
                w.len() > 1
                    && w.starts_with(['Q', 'q'])
                    && w[1..].chars().all(|c| c.is_ascii_digit())
            })
            .count();
        assert_eq!(markers, 1, "{question}");
        // Ordinary text is left as it is.
        assert_eq!(
            inline("a red Q-tip, Qatar and 2 cups"),
            "a red Q-tip, Qatar and 2 cups"
        );
    }
}

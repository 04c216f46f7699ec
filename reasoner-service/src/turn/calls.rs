//! The turn's upstream calls, one constructor per kind: what each step sends (prompt, image,
//! token budget, temperature, structured output) is decided here and nowhere else.

use std::collections::BTreeMap;

use shared_types::{ConceptDescription, Identity};

use crate::identity::{IDENTITY_MAX_TOKENS_PER_CONCEPT, identity_response_format};
use crate::image::DataUri;
use crate::prompts::{
    DetectionReportEntry, IDENTITY_SYSTEM_PROMPT, VERIFICATION_SYSTEM_PROMPT, answer_system_prompt,
    identity_structured_prompt, identity_user_prompt, raw_description_prompt,
    verification_user_prompt,
};
use crate::reflection::verification_response_format;
use crate::upstream::{CallKind, ChatCall};

/// Tokens a verification reply may take per question: room for "Q1. Yes, ..." but not for an
/// essay (the first standalone yes/no is all that is read), so a rambling model cannot make a
/// check cost a whole answer's decoding.
pub const VERIFY_MAX_TOKENS_PER_QUESTION: u32 = 16;

impl ChatCall {
    /// Table 7: the identities of the concepts the cache lacked, deterministic.
    pub fn identity(concepts: &[&ConceptDescription], json_schema: bool) -> Self {
        Self {
            kind: CallKind::Identity,
            system: Some(IDENTITY_SYSTEM_PROMPT.to_owned()),
            user_text: identity_user_prompt(concepts),
            image: None,
            max_tokens: Some(IDENTITY_MAX_TOKENS_PER_CONCEPT * concepts.len() as u32),
            temperature: Some(0.0),
            response_format: json_schema.then(|| identity_response_format(concepts)),
            history: Vec::new(),
        }
    }

    /// Table 8: the numbered yes/no questions about one image, deterministic.
    pub fn verify(questions: &[String], image: &DataUri, json_schema: bool) -> Self {
        Self {
            kind: CallKind::Verify,
            system: Some(VERIFICATION_SYSTEM_PROMPT.to_owned()),
            user_text: verification_user_prompt(questions),
            image: Some(image.clone()),
            max_tokens: Some(VERIFY_MAX_TOKENS_PER_QUESTION * questions.len() as u32),
            temperature: Some(0.0),
            response_format: json_schema.then(|| verification_response_format(questions.len())),
            history: Vec::new(),
        }
    }

    /// Table 9: the detection report as the system prompt, the question with the image.
    pub fn report_answer(
        report: &BTreeMap<String, DetectionReportEntry>,
        question: &str,
        image: &DataUri,
        max_tokens: Option<u32>,
    ) -> Self {
        let system = Some(answer_system_prompt(report));
        Self::answer(system, question.to_owned(), Some(image.clone()), max_tokens)
    }

    /// Appendix D: no image, the identities' fields and the question.
    pub fn text_answer(
        identities: &BTreeMap<String, Identity>,
        question: &str,
        max_tokens: Option<u32>,
    ) -> Self {
        let user_text = identity_structured_prompt(identities, question);
        Self::answer(None, user_text, None, max_tokens)
    }

    /// Mode `pure`: the raw descriptions and the question, with the image if there is one.
    pub fn raw_answer(
        concepts: &[ConceptDescription],
        question: &str,
        image: Option<&DataUri>,
        max_tokens: Option<u32>,
    ) -> Self {
        let user_text = raw_description_prompt(concepts, question);
        Self::answer(None, user_text, image.cloned(), max_tokens)
    }

    /// Answers send no temperature: the upstream's own default applies.
    fn answer(
        system: Option<String>,
        user_text: String,
        image: Option<DataUri>,
        max_tokens: Option<u32>,
    ) -> Self {
        Self {
            kind: CallKind::Answer,
            system,
            user_text,
            image,
            max_tokens,
            temperature: None,
            response_format: None,
            history: Vec::new(),
        }
    }
}

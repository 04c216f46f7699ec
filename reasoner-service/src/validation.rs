//! Request validation, before any upstream call: a [`ReasonRequest`] either becomes a
//! [`ValidReasonRequest`] (the decoded image and what the mode needs, by construction) or a
//! typed 4xx. Concept ids follow the one rule of [`ConceptId::parse_bracketed`]. The shape
//! follows TGI's `validation.rs`: the handler gets a value it no longer has to check.

use std::collections::HashSet;

use shared_types::limits::{
    MAX_ANSWER_TOKENS, MAX_CUE_TEXT_CHARS, MAX_DESCRIPTION_CHARS, MAX_QUESTION_CHARS, WIRE_SLACK,
    check_chars,
};
use shared_types::{
    ConceptDescription, ConceptId, CueSet, IdentitiesRequest, Mode, PriorTurn, ReasonOptions,
    ReasonRequest,
};

use crate::error::ReasonerError;
use crate::image::{DataUri, image_data_uri};

/// Largest number of concepts in one request; the paper's multi-concept scenes have a few.
pub const MAX_CONCEPTS: usize = 64;

/// A turn that passed validation, split by what its mode will do.
#[derive(Debug)]
pub struct ValidReasonRequest {
    pub question: String,
    /// Ids bracketed and unique, descriptions non-empty, at most [`MAX_CONCEPTS`].
    pub concepts: Vec<ConceptDescription>,
    pub mode: Mode,
    pub options: ReasonOptions,
    pub plan: TurnPlan,
    /// Earlier turns, within the caps; the budget is applied by the turn.
    pub history: Vec<PriorTurn>,
}

/// What the turn does, with exactly the inputs each mode needs (see `turn`'s table).
#[derive(Debug)]
pub enum TurnPlan {
    /// `pure`: the large model alone with the raw descriptions, image or not.
    Pure { image: Option<DataUri> },
    /// Appendix D: no image, so no cues; identities plus the question.
    TextOnly,
    /// `no_detector`: identities and the image, a report without cues.
    NoDetector { image: DataUri },
    /// `no_reflection`: the edge's cues as given.
    NoReflection { image: DataUri, cues: CueSet },
    /// `full`: the edge's cues, verified first.
    Full { image: DataUri, cues: CueSet },
}

/// Validates `/v1/identities`' concepts.
pub fn validate_identities(
    request: IdentitiesRequest,
) -> Result<Vec<ConceptDescription>, ReasonerError> {
    validate_concepts(&request.concepts)?;
    Ok(request.concepts)
}

/// Validates a turn and decodes its image (without copying the payload).
pub fn validate_reason(request: ReasonRequest) -> Result<ValidReasonRequest, ReasonerError> {
    if request.question.trim().is_empty() {
        return Err(ReasonerError::invalid(
            "empty_question",
            "the question is empty",
        ));
    }
    check_chars(
        "the question",
        &request.question,
        MAX_QUESTION_CHARS * WIRE_SLACK,
    )
    .map_err(|message| ReasonerError::too_large("question_too_long", message))?;
    if let Some(tokens) = request.options.max_answer_tokens
        && !(1..=MAX_ANSWER_TOKENS).contains(&tokens)
    {
        return Err(ReasonerError::invalid(
            "invalid_request",
            format!("max_answer_tokens must be between 1 and {MAX_ANSWER_TOKENS}"),
        ));
    }
    validate_concepts(&request.concepts)?;
    crate::history::validate_history(&request.history)?;
    if let Some(cues) = &request.cues {
        validate_cue_ids(cues, &request.concepts)?;
        validate_cue_text(cues)?;
    }
    let plan = plan(request.mode, request.image, request.cues)?;
    Ok(ValidReasonRequest {
        question: request.question,
        concepts: request.concepts,
        mode: request.mode,
        options: request.options,
        plan,
        history: request.history,
    })
}

/// The mode's plan; the image is decoded only once the combination is known to be valid, so
/// a wrong combination is reported before a bad image.
fn plan(
    mode: Mode,
    image: Option<String>,
    cues: Option<CueSet>,
) -> Result<TurnPlan, ReasonerError> {
    let needs_cues = matches!(mode, Mode::Full | Mode::NoReflection);
    match (&image, &cues) {
        (None, Some(_)) if needs_cues => {
            return Err(ReasonerError::invalid(
                "cues_without_image",
                "cues describe an image, but the request has none",
            ));
        }
        (Some(_), None) if needs_cues => {
            return Err(ReasonerError::invalid(
                "missing_cues",
                "modes full and no_reflection need the edge's cues with the image",
            ));
        }
        _ => {}
    }
    // The request's image becomes the data URI's payload without a copy: under load, memory
    // per turn is dominated by the image.
    let image = image.map(image_data_uri).transpose()?;
    Ok(match (mode, image, cues) {
        (Mode::Pure, image, _) => TurnPlan::Pure { image },
        (_, None, _) => TurnPlan::TextOnly,
        (Mode::NoDetector, Some(image), _) => TurnPlan::NoDetector { image },
        (Mode::NoReflection, Some(image), cues) => TurnPlan::NoReflection {
            image,
            cues: cues.unwrap_or_default(),
        },
        (Mode::Full, Some(image), cues) => TurnPlan::Full {
            image,
            cues: cues.unwrap_or_default(),
        },
    })
}

/// Ids are bracketed (`<bo>`), unique and described; there is at least one and not too many.
fn validate_concepts(concepts: &[ConceptDescription]) -> Result<(), ReasonerError> {
    if concepts.len() > MAX_CONCEPTS {
        return Err(ReasonerError::too_large(
            "too_many_concepts",
            format!("at most {MAX_CONCEPTS} concepts per request"),
        ));
    }
    let mut seen = HashSet::new();
    for concept in concepts {
        if let Err(error) = ConceptId::parse_bracketed(&concept.id) {
            return Err(ReasonerError::invalid(
                "invalid_concept_id",
                error.to_string(),
            ));
        }
        if !seen.insert(concept.id.as_str()) {
            return Err(ReasonerError::invalid(
                "duplicate_concept",
                format!("concept {} appears twice", concept.id),
            ));
        }
        if concept.description.trim().is_empty() {
            return Err(ReasonerError::invalid(
                "empty_description",
                format!("concept {} has an empty description", concept.id),
            ));
        }
        check_chars(
            &format!("the description of {}", concept.id),
            &concept.description,
            MAX_DESCRIPTION_CHARS * WIRE_SLACK,
        )
        .map_err(|message| ReasonerError::too_large("description_too_long", message))?;
    }
    Ok(())
}

/// Cue locations are short phrases; the verification prompts quote them.
fn validate_cue_text(cues: &CueSet) -> Result<(), ReasonerError> {
    for (id, cue) in cues {
        for (field, text) in [
            ("location-absolute", &cue.location_absolute),
            ("location-relative", &cue.location_relative),
        ] {
            if let Some(text) = text {
                check_chars(&format!("{id}.{field}"), text, MAX_CUE_TEXT_CHARS)
                    .map_err(|message| ReasonerError::too_large("cue_text_too_long", message))?;
            }
        }
    }
    Ok(())
}

fn validate_cue_ids(cues: &CueSet, concepts: &[ConceptDescription]) -> Result<(), ReasonerError> {
    let known: HashSet<&str> = concepts.iter().map(|c| c.id.as_str()).collect();
    let unknown: Vec<&str> = cues
        .keys()
        .map(String::as_str)
        .filter(|id| !known.contains(id))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ReasonerError::invalid(
        "unknown_concept",
        format!(
            "cues for concepts not in the request: {}",
            unknown.join(", ")
        ),
    ))
}

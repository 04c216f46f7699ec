//! Property tests of the reasoner's parsers of the large model's replies: the yes/no answers
//! of reflection and the identity object of Table 7. 10,000 cases each by default;
//! `SLC_PROPTEST_CASES=1000000 cargo test -p slc-reasoner proptests` is the long run.

use proptest::prelude::*;
use serde_json::json;
use shared_types::{ConceptDescription, YesNo};

use crate::identity::parse_identity_reply;
use crate::prompts::{location_absolute_question, location_relative_question};
use crate::reflection::parse_yes_no_answers;

fn config() -> ProptestConfig {
    let cases = std::env::var("SLC_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig::with_cases(cases)
}

fn answers() -> impl Strategy<Value = Vec<bool>> {
    proptest::collection::vec(any::<bool>(), 1..8)
}

fn word(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

fn yes_no(yes: bool) -> YesNo {
    if yes { YesNo::Yes } else { YesNo::No }
}

proptest! {
    #![proptest_config(config())]

    /// Any reply gives exactly one answer per question, and only a standalone "yes" confirms.
    #[test]
    fn yes_no_parsing_is_total(reply in "\\PC{0,200}", expected in 0usize..10) {
        let parsed = parse_yes_no_answers(&reply, expected);
        prop_assert_eq!(parsed.len(), expected);
        let standalone_yes = reply
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w.eq_ignore_ascii_case("yes"))
            || reply.to_ascii_lowercase().contains("\"yes\"");
        if !standalone_yes {
            prop_assert!(parsed.iter().all(|a| *a == YesNo::No), "{reply:?} confirmed a cue");
        }
    }

    /// Numbered plain-text answers and the structured form both read back as given, in any
    /// letter case, with filler between them.
    #[test]
    fn yes_no_answers_read_back(given in answers(), filler in "[ .,:;\\n]{1,4}", upper in any::<bool>()) {
        let expected: Vec<YesNo> = given.iter().map(|a| yes_no(*a)).collect();
        let plain: String = given
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let w = if upper { word(*a).to_uppercase() } else { word(*a).to_owned() };
                format!("Q{}{filler}{w}{filler}", i + 1)
            })
            .collect();
        prop_assert_eq!(parse_yes_no_answers(&plain, given.len()), expected.clone());
        let structured: serde_json::Map<String, serde_json::Value> = given
            .iter()
            .enumerate()
            .rev()
            .map(|(i, a)| (format!("Q{}", i + 1), json!(word(*a))))
            .collect();
        let structured = serde_json::Value::Object(structured).to_string();
        prop_assert_eq!(parse_yes_no_answers(&structured, given.len()), expected);
    }

    /// Any reply yields an identity for every concept: parsed, or the description's fallback.
    #[test]
    fn identity_parsing_is_total(reply in "\\PC{0,300}", ids in proptest::collection::btree_set("[a-z]{1,6}", 1..4)) {
        let concepts: Vec<ConceptDescription> = ids
            .iter()
            .map(|id| ConceptDescription { id: format!("<{id}>"), description: format!("<{id}> is a thing.") })
            .collect();
        let refs: Vec<&ConceptDescription> = concepts.iter().collect();
        let parsed = parse_identity_reply(&reply, &refs);
        prop_assert_eq!(parsed.identities.len(), concepts.len());
        for fallback in &parsed.fallbacks {
            prop_assert!(parsed.identities.contains_key(fallback));
        }
    }

    /// A well-formed identity object reads back exactly, also wrapped in a code fence or prose.
    #[test]
    fn identity_replies_read_back(
        entries in proptest::collection::btree_map("[a-z]{1,6}", ("[a-z][a-z ]{0,20}[a-z]", "[a-z][a-z ,]{0,30}[a-z]"), 1..4),
        wrapping in 0usize..3,
    ) {
        let concepts: Vec<ConceptDescription> = entries
            .keys()
            .map(|id| ConceptDescription { id: format!("<{id}>"), description: format!("<{id}> is a thing.") })
            .collect();
        let object: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(id, (category, attributes))| (format!("<{id}>"), json!({"category": category, "attributes": attributes})))
            .collect();
        let body = serde_json::Value::Object(object).to_string();
        let reply = match wrapping {
            0 => body,
            1 => format!("```json\n{body}\n```"),
            _ => format!("Here you go: {body} Hope that helps."),
        };
        let refs: Vec<&ConceptDescription> = concepts.iter().collect();
        let parsed = parse_identity_reply(&reply, &refs);
        prop_assert!(parsed.fallbacks.is_empty(), "{reply:?}");
        for (id, (category, attributes)) in &entries {
            let identity = &parsed.identities[&format!("<{id}>")];
            prop_assert_eq!(&identity.category, category);
            prop_assert_eq!(&identity.attributes, attributes);
        }
    }

    /// Whatever a description or a cue says, a verification question is one line with one
    /// question marker: injected `Qn.` lines cannot shift the answers.
    #[test]
    fn interpolated_text_cannot_add_a_question(identity in "\\PC{0,60}", location in "\\PC{0,60}", number in 1usize..20) {
        for question in [
            location_absolute_question(number, &identity, &location),
            location_relative_question(number, &identity, &location),
        ] {
            prop_assert!(!question.contains(['\n', '\r']), "{question:?}");
            let markers = question
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 1 && w.starts_with(['Q', 'q']) && w[1..].chars().all(|c| c.is_ascii_digit()))
                .count();
            prop_assert_eq!(markers, 1, "{:?}", question);
        }
    }
}

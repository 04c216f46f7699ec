//! Property tests of the edge's parsers of untrusted input: cue sets from the model, image
//! payloads from clients, and the pseudonym round trip. 10,000 cases each by default;
//! `SLC_PROPTEST_CASES=1000000 cargo test -p slc-detector proptests` is the long run.

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::json;
use shared_types::ConceptId;

use crate::detection::normalize_cue_set;
use crate::images::decode_payload;
use crate::pseudonyms::Pseudonyms;

/// 10,000 cases, or `SLC_PROPTEST_CASES`; shared by the crate's property tests.
pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var("SLC_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig::with_cases(cases)
}

/// Concept ids as the registry holds them.
fn concept_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,12}"
}

/// One cue: present or not, and two optional location strings the schema allows.
fn cue() -> impl Strategy<Value = (bool, Option<String>, Option<String>)> {
    (
        any::<bool>(),
        proptest::option::of("[ !#-\\[\\]-~]{0,20}"),
        proptest::option::of("[ !#-\\[\\]-~]{0,20}"),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cue_set_parsing_never_panics(text in "\\PC{0,200}", ids in proptest::collection::vec(concept_id(), 0..4)) {
        let bracketed: Vec<String> = ids.iter().map(|id| format!("<{id}>")).collect();
        let _ = normalize_cue_set(&text, &bracketed);
    }

    /// A cue set in the schema's shape normalizes to exactly its meaning: absent concepts lose
    /// their locations, empty or blank locations are dropped, the rest are trimmed.
    #[test]
    fn valid_cue_sets_normalize_to_their_meaning(
        cues in proptest::collection::btree_map(concept_id(), cue(), 1..5)
    ) {
        let bracketed: Vec<String> = cues.keys().map(|id| format!("<{id}>")).collect();
        let mut object = serde_json::Map::new();
        for (id, (present, absolute, relative)) in &cues {
            let mut entry = serde_json::Map::new();
            entry.insert("present".into(), json!(present));
            if let Some(text) = absolute { entry.insert("location-absolute".into(), json!(text)); }
            if let Some(text) = relative { entry.insert("location-relative".into(), json!(text)); }
            object.insert(format!("<{id}>"), serde_json::Value::Object(entry));
        }
        let parsed = normalize_cue_set(&serde_json::Value::Object(object).to_string(), &bracketed)
            .expect("a valid cue set parses");
        prop_assert_eq!(parsed.len(), cues.len());
        let kept = |present: bool, text: &Option<String>| {
            text.as_ref().filter(|_| present).map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        };
        for (id, (present, absolute, relative)) in &cues {
            let cue = &parsed[&format!("<{id}>")];
            prop_assert_eq!(cue.present, *present);
            prop_assert_eq!(&cue.location_absolute, &kept(*present, absolute));
            prop_assert_eq!(&cue.location_relative, &kept(*present, relative));
        }
    }

    #[test]
    fn image_payloads_never_panic(input in "\\PC{0,300}") {
        let _ = decode_payload(&input, "image");
    }

    /// Any bytes come back exactly, as a data URL or bare base64 (padded, unpadded, URL-safe).
    #[test]
    fn image_payloads_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..300)) {
        let standard = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let url = format!("data:image/png;base64,{standard}");
        prop_assert_eq!(decode_payload(&url, "image").unwrap(), bytes.clone());
        prop_assert_eq!(decode_payload(&standard, "image").unwrap(), bytes.clone());
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        prop_assert_eq!(decode_payload(&unpadded, "image").unwrap(), bytes.clone());
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        prop_assert_eq!(decode_payload(&url_safe, "image").unwrap(), bytes);
    }

    /// Hidden text carries no real id in any form the edge counts as a mention, and revealing
    /// it gives back the text with every mention bracketed under its real id.
    #[test]
    fn pseudonyms_round_trip(
        ids in proptest::collection::btree_set("[a-z]{2,6}", 1..4),
        pieces in proptest::collection::vec((0usize..4, 0usize..3, "[ .,!?]{1,3}"), 1..12),
    ) {
        let ids: Vec<String> = ids.into_iter().collect();
        let concept_ids: Vec<ConceptId> = ids.iter().map(|id| ConceptId::parse(id).unwrap()).collect();
        let names = Pseudonyms::new(&concept_ids);
        let (mut text, mut expected) = (String::new(), String::new());
        for (which, form, gap) in pieces {
            let id = &ids[which % ids.len()];
            let mention = match form {
                0 => format!("<{id}>"),
                1 => format!("<{}>", id.to_uppercase()),
                _ => id.clone(),
            };
            text.push_str(&mention);
            text.push_str(&gap);
            expected.push_str(&format!("<{id}>"));
            expected.push_str(&gap);
        }
        let hidden = names.hide(&text);
        let words: Vec<String> = hidden
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map(str::to_ascii_lowercase)
            .collect();
        for id in &ids {
            prop_assert!(!words.contains(id), "{id} in {hidden:?}");
        }
        prop_assert_eq!(names.reveal(&hidden), expected);
    }
}

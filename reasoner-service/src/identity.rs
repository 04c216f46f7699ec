//! Identity extraction (paper Table 7): each concept's `{category, attributes}` from its
//! description, read from the cache when this model has seen the description before (for
//! this caller, under the default scope; see `cache.rs`).
//!
//! The model's output is validated per concept. Where it cannot be used (not JSON, concept
//! missing, a field missing or empty), the authors' fallback applies: category
//! "A character or object.", attributes = the description. Fallbacks are not cached.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shared_types::{ConceptDescription, Identity};

use crate::cache::{Caller, IdentityCacheScope, identity_cache_key};
use crate::prompts::FALLBACK_CATEGORY;

/// The identity step's result for a set of concepts.
#[derive(Debug, Clone, Default)]
pub struct ParsedIdentities {
    /// Keyed by bracketed id.
    pub identities: BTreeMap<String, Identity>,
    /// Ids that took the fallback.
    pub fallbacks: Vec<String>,
}

/// The authors' fallback identity.
pub fn fallback_identity(description: &str) -> Identity {
    Identity {
        category: FALLBACK_CATEGORY.to_owned(),
        attributes: description.to_owned(),
    }
}

/// Descriptions whose extraction fell back recently, per model. The fallback is not stored in
/// the database (a later extraction may well succeed), but asking again on every turn repeats a
/// call that just failed, so each replica waits `retry_after` before asking again.
pub struct RecentFallbacks {
    retry_after: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl RecentFallbacks {
    pub fn new(retry_after: std::time::Duration) -> Self {
        RecentFallbacks {
            retry_after,
            seen: Default::default(),
        }
    }

    fn key(model: &str, hash: &str) -> String {
        format!("{model}\u{0}{hash}")
    }

    /// Whether `hash` fell back under `model` less than `retry_after` ago.
    pub fn is_recent(&self, model: &str, hash: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.get(&Self::key(model, hash))
            .is_some_and(|when| when.elapsed() < self.retry_after)
    }

    pub fn remember(&self, model: &str, hashes: &[&str]) {
        if self.retry_after.is_zero() {
            return;
        }
        let mut seen = self.seen.lock().unwrap();
        // Expired entries go when new ones come, so the map stays as small as the recent set.
        seen.retain(|_, when| when.elapsed() < self.retry_after);
        let now = std::time::Instant::now();
        for hash in hashes {
            seen.insert(Self::key(model, hash), now);
        }
    }
}

/// Tokens an identity may take: a category and a few attributes, as JSON. Enough for any
/// sensible reply, and a model that rambles cannot spend a whole context on it.
pub const IDENTITY_MAX_TOKENS_PER_CONCEPT: u32 = 128;

/// `response_format` for upstreams with structured output: exactly the requested ids, each
/// with exactly `category` and `attributes`.
pub fn identity_response_format(concepts: &[&ConceptDescription]) -> Value {
    let entry = json!({
        "type": "object",
        "properties": {
            "category": {"type": "string"},
            "attributes": {"type": "string"},
        },
        "required": ["category", "attributes"],
        "additionalProperties": false,
    });
    let properties: serde_json::Map<String, Value> = concepts
        .iter()
        .map(|concept| (concept.id.clone(), entry.clone()))
        .collect();
    let required: Vec<&str> = concepts.iter().map(|concept| concept.id.as_str()).collect();
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "concept_identities",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            },
        },
    })
}

/// Reads the model's reply. The object may be wrapped in code fences or prose despite the
/// rules; the outermost `{…}` is parsed. Each concept is then looked up by its bracketed id
/// (or, leniently, its bare id) and must carry non-empty string `category` and `attributes`.
pub fn parse_identity_reply(reply: &str, concepts: &[&ConceptDescription]) -> ParsedIdentities {
    let object = outermost_json_object(reply);
    let mut parsed = ParsedIdentities::default();
    for concept in concepts {
        let bare = concept.id.trim_start_matches('<').trim_end_matches('>');
        let entry = object
            .as_ref()
            .and_then(|object| object.get(&concept.id).or_else(|| object.get(bare)));
        match entry.and_then(identity_from_value) {
            Some(identity) => {
                parsed.identities.insert(concept.id.clone(), identity);
            }
            None => {
                parsed
                    .identities
                    .insert(concept.id.clone(), fallback_identity(&concept.description));
                parsed.fallbacks.push(concept.id.clone());
            }
        }
    }
    parsed
}

fn identity_from_value(value: &Value) -> Option<Identity> {
    let category = value.get("category")?.as_str()?.trim();
    let attributes = value.get("attributes")?.as_str()?.trim();
    (!category.is_empty() && !attributes.is_empty()).then(|| Identity {
        category: category.to_owned(),
        attributes: attributes.to_owned(),
    })
}

fn outermost_json_object(reply: &str) -> Option<serde_json::Map<String, Value>> {
    let start = reply.find('{')?;
    let end = reply.rfind('}')?;
    if end < start {
        return None;
    }
    match serde_json::from_str::<Value>(&reply[start..=end]).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// The cache keys of a request's concepts for `caller` under `scope`, in order.
pub fn cache_keys_of(
    scope: IdentityCacheScope,
    caller: Caller,
    concepts: &[ConceptDescription],
) -> Vec<String> {
    concepts
        .iter()
        .map(|concept| identity_cache_key(scope, caller, &concept.description))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concept(id: &str, description: &str) -> ConceptDescription {
        ConceptDescription {
            id: id.into(),
            description: description.into(),
        }
    }

    #[test]
    fn usable_entries_are_kept_and_the_rest_fall_back() {
        let bo = concept("<bo>", "<bo> is a puppy.");
        let mam = concept("<mam>", "<mam> is a cat.");
        let lina = concept("<lina>", "<lina> is a friend.");
        let reply = r#"```json
{"<bo>": {"category": "a puppy", "attributes": "playful"},
 "mam": {"category": "a cat", "attributes": "sleepy"},
 "<lina>": {"category": "", "attributes": "kind"}}
```"#;
        let parsed = parse_identity_reply(reply, &[&bo, &mam, &lina]);
        assert_eq!(parsed.identities["<bo>"].category, "a puppy");
        assert_eq!(parsed.identities["<mam>"].attributes, "sleepy");
        assert_eq!(
            parsed.identities["<lina>"],
            fallback_identity("<lina> is a friend.")
        );
        assert_eq!(parsed.fallbacks, vec!["<lina>".to_owned()]);
    }

    #[test]
    fn unparseable_output_falls_back_for_every_concept() {
        let bo = concept("<bo>", "<bo> is a puppy.");
        for reply in ["", "sorry, I cannot", "{not json}", "[1, 2]", "} {"] {
            let parsed = parse_identity_reply(reply, &[&bo]);
            assert_eq!(parsed.fallbacks, vec!["<bo>".to_owned()], "reply {reply:?}");
            assert_eq!(parsed.identities["<bo>"].category, FALLBACK_CATEGORY);
            assert_eq!(parsed.identities["<bo>"].attributes, "<bo> is a puppy.");
        }
    }
}

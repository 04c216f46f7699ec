//! Optional pseudonymization of concept ids on their way to the cloud: `<bo>` becomes `<c1>`
//! in everything sent, and `<c1>` becomes `<bo>` again in everything received.
//!
//! Replacement is one pass over `<...>` tokens with a lookup table, so an id that happens to
//! look like an alias (a user concept named `c2`) cannot be replaced twice. The walks over a
//! cue set and over the reasoner's trace live here too, so every field that can carry an id is
//! handled in one place.

use std::collections::{BTreeMap, HashMap};

use shared_types::{ConceptId, CueSet, ReasonResponse};

#[derive(Debug, Clone, Default)]
pub struct Pseudonyms {
    hide: HashMap<String, String>,
    reveal: HashMap<String, String>,
}

impl Pseudonyms {
    /// Aliases `<c1>`, `<c2>`, … in the order of `ids`.
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a ConceptId>) -> Self {
        let mut pseudonyms = Pseudonyms::default();
        for (index, id) in ids.into_iter().enumerate() {
            let alias = format!("<c{}>", index + 1);
            pseudonyms.hide.insert(id.bracketed(), alias.clone());
            pseudonyms.reveal.insert(alias, id.bracketed());
        }
        pseudonyms
    }

    /// No-op pseudonyms, for requests that did not ask for them.
    pub fn identity() -> Self {
        Pseudonyms::default()
    }

    pub fn hide(&self, text: &str) -> String {
        replace_tokens(text, &self.hide)
    }

    pub fn reveal(&self, text: &str) -> String {
        replace_tokens(text, &self.reveal)
    }

    /// A cue set as the cloud may see it: ids and free-text locations hidden.
    pub fn hide_cues(&self, cues: &CueSet) -> CueSet {
        map_cues(cues.clone(), |text| self.hide(text))
    }

    /// Maps aliases back to the real ids everywhere in the reasoner's trace.
    pub fn reveal_reasoning(&self, mut reasoning: ReasonResponse) -> ReasonResponse {
        let reveal = |text: &str| self.reveal(text);
        reasoning.answer = self.reveal(&reasoning.answer);
        reasoning.refined_cues = reasoning.refined_cues.map(|cues| map_cues(cues, reveal));
        reasoning.identities = map_keys(reasoning.identities, reveal)
            .into_iter()
            .map(|(id, mut identity)| {
                identity.category = self.reveal(&identity.category);
                identity.attributes = self.reveal(&identity.attributes);
                (id, identity)
            })
            .collect();
        reasoning.actions = map_keys(reasoning.actions, reveal);
        for verification in &mut reasoning.verifications {
            verification.concept = self.reveal(&verification.concept);
            verification.question = self.reveal(&verification.question);
            verification.raw_answer = self.reveal(&verification.raw_answer);
        }
        reasoning
    }
}

fn map_cues(cues: CueSet, rename: impl Fn(&str) -> String) -> CueSet {
    cues.into_iter()
        .map(|(id, mut cue)| {
            cue.location_absolute = cue.location_absolute.map(|text| rename(&text));
            cue.location_relative = cue.location_relative.map(|text| rename(&text));
            (rename(&id), cue)
        })
        .collect()
}

fn map_keys<V>(map: BTreeMap<String, V>, rename: impl Fn(&str) -> String) -> BTreeMap<String, V> {
    map.into_iter()
        .map(|(key, value)| (rename(&key), value))
        .collect()
}

fn replace_tokens(text: &str, table: &HashMap<String, String>) -> String {
    if table.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let candidate = &rest[open..];
        match candidate[1..].find(['>', '<']) {
            Some(offset) if candidate.as_bytes()[offset + 1] == b'>' => {
                let token = &candidate[..offset + 2];
                out.push_str(table.get(token).map(String::as_str).unwrap_or(token));
                rest = &candidate[offset + 2..];
            }
            _ => {
                out.push('<');
                rest = &candidate[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_and_reveals_whole_tokens_only_once() {
        let ids: Vec<ConceptId> = ["bo", "c1", "bob"]
            .iter()
            .map(|id| ConceptId::parse(id).unwrap())
            .collect();
        let names = Pseudonyms::new(&ids);
        let hidden = names.hide("Is <bo> next to <c1> and <bob>? <bo");
        assert_eq!(hidden, "Is <c1> next to <c2> and <c3>? <bo");
        assert_eq!(names.reveal(&hidden), "Is <bo> next to <c1> and <bob>? <bo");
        assert_eq!(names.hide("a <<bo>> b"), "a <<c1>> b");
    }
}

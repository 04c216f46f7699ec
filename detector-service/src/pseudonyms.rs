//! Optional pseudonymization of concept ids on their way to the cloud: `<bo>` becomes `<c1>`
//! in everything sent, and `<c1>` becomes `<bo>` again in everything received.
//!
//! What counts as a mention, on the way out ([`Pseudonyms::hide`]):
//! - a bracketed id in any case: `<bo>`, `<Bo>`, `<BO>`;
//! - a bare whole word in any case: `bo`, `Bo` — "whole" meaning not adjacent to another id
//!   character (`[A-Za-z0-9_-]`), so `bob`, `bo_2` and `bo-like` are not mentions of `bo`.
//!
//! Both become the bracketed alias. An exact-case id wins over a case variant, and the turn's
//! own concepts win over the others, so `<Bo>` is `bo`'s alias unless `Bo` is a concept too.
//! A concept id that is an ordinary word (`dog`) is hidden wherever that word occurs; that is
//! the price of the promise that no real id reaches the cloud.
//!
//! Concepts that are registered but not in the turn (`<lina>` mentioned in `<bo>`'s
//! description) are aliased too, on first mention, after the turn's own: the edge passes every
//! registered id ([`Pseudonyms::also_hiding`]). An alias handed out on first mention, rather
//! than one per registered concept up front, tells the cloud nothing about how many concepts
//! there are or where a mentioned one sorts among them.
//!
//! Replacement is one pass over the text with a lookup table, so an id that happens to look
//! like an alias (a user concept named `c2`) cannot be replaced twice. [`Pseudonyms::reveal`]
//! maps bracketed aliases (any case) back to the bracketed real id and leaves everything else,
//! bare `c1` included, as it is. The walks over a cue set and over the reasoner's trace live
//! here too, so every field that can carry an id is handled in one place.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use shared_types::{ConceptId, CueSet, ReasonResponse};

#[derive(Debug, Default)]
pub struct Pseudonyms {
    /// Behind a lock because a mention of a concept outside the turn gets its alias during
    /// `hide`, which takes `&self`. The lock is only held inside one `hide` or `reveal`.
    table: Mutex<AliasTable>,
}

#[derive(Debug, Default)]
struct AliasTable {
    /// The ids that have an alias, in alias order: `aliased[0]` is `<c1>`.
    aliased: Vec<ConceptId>,
    /// Every id to hide, by its exact bare form, with its alias index once it has one.
    known: HashMap<String, (ConceptId, Option<usize>)>,
    /// Lowercased bare id → the exact bare id a case variant stands for (the first given).
    folded: HashMap<String, String>,
}

impl AliasTable {
    fn add(&mut self, id: &ConceptId, alias_now: bool) {
        if self.known.contains_key(id.bare()) {
            return;
        }
        let index = alias_now.then(|| {
            self.aliased.push(id.clone());
            self.aliased.len() - 1
        });
        self.known.insert(id.bare().to_owned(), (id.clone(), index));
        self.folded
            .entry(id.bare().to_ascii_lowercase())
            .or_insert_with(|| id.bare().to_owned());
    }

    /// The alias of the concept `word` mentions, handing out the next one on a first mention.
    fn alias_for(&mut self, word: &str) -> Option<String> {
        let exact = if self.known.contains_key(word) {
            word.to_owned()
        } else {
            self.folded.get(&word.to_ascii_lowercase())?.clone()
        };
        let (id, index) = self.known.get_mut(&exact)?;
        let index = *index.get_or_insert_with(|| {
            self.aliased.push(id.clone());
            self.aliased.len() - 1
        });
        Some(alias(index))
    }

    /// The bracketed real id behind alias `word` (`c1`, `C1`).
    fn real_for(&self, word: &str) -> Option<String> {
        let digits = word.strip_prefix(['c', 'C'])?;
        if digits.starts_with('0') || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let number: usize = digits.parse().ok()?;
        Some(self.aliased.get(number.checked_sub(1)?)?.bracketed())
    }
}

fn alias(index: usize) -> String {
    format!("<c{}>", index + 1)
}

impl Pseudonyms {
    /// Aliases `<c1>`, `<c2>`, … in the order of `ids`, the turn's concepts.
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a ConceptId>) -> Self {
        let mut table = AliasTable::default();
        for id in ids {
            table.add(id, true);
        }
        Pseudonyms {
            table: Mutex::new(table),
        }
    }

    /// A conversation's pseudonyms: `prior` keep the aliases of its earlier turns (`prior[k]`
    /// is `<c{k+1}>`), and the turn's concepts not among them get the next ones, so an id has
    /// one alias for the whole conversation.
    pub fn continuing<'a>(
        prior: &'a [ConceptId],
        ids: impl IntoIterator<Item = &'a ConceptId>,
    ) -> Self {
        Self::new(prior.iter().chain(ids))
    }

    /// The ids that have an alias, in alias order (what a conversation stores after a turn,
    /// first mentions of concepts outside it included).
    pub fn aliased(&self) -> Vec<ConceptId> {
        self.lock().aliased.clone()
    }

    /// Also hides mentions of `ids` (every registered concept): each gets the next alias on
    /// its first mention. Ids already given to [`Pseudonyms::new`] keep theirs.
    pub fn also_hiding<'a>(self, ids: impl IntoIterator<Item = &'a ConceptId>) -> Self {
        {
            let mut table = self.lock();
            for id in ids {
                table.add(id, false);
            }
        }
        self
    }

    /// No-op pseudonyms, for requests that did not ask for them.
    pub fn identity() -> Self {
        Pseudonyms::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AliasTable> {
        // The table is consistent after every statement, so a poisoned lock is still usable.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn hide(&self, text: &str) -> String {
        let mut table = self.lock();
        if table.known.is_empty() {
            return text.to_string();
        }
        replace_mentions(text, true, |word| table.alias_for(word))
    }

    pub fn reveal(&self, text: &str) -> String {
        let table = self.lock();
        if table.aliased.is_empty() {
            return text.to_string();
        }
        replace_mentions(text, false, |word| table.real_for(word))
    }

    /// A cue set as the cloud may see it: ids and free-text locations hidden.
    pub fn hide_cues(&self, cues: &CueSet) -> CueSet {
        map_cues(cues.clone(), |text| self.hide(text))
    }

    /// A cue set from the cloud with the real ids back.
    pub fn reveal_cues(&self, cues: &CueSet) -> CueSet {
        map_cues(cues.clone(), |text| self.reveal(text))
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

fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// One pass over `text`: each `<word>` token, and with `bare` each whole word, for which
/// `replacement` has an answer is replaced by it; everything else is copied. Words are maximal
/// runs of id characters, so a match is never adjacent to another id character, and output is
/// never scanned again.
fn replace_mentions(
    text: &str,
    bare: bool,
    mut replacement: impl FnMut(&str) -> Option<String>,
) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // Start of the text not yet copied; every index below is at an ASCII byte, so a boundary.
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let bracketed = byte == b'<';
        let starts_word = bare && is_id_byte(byte);
        if !(bracketed || starts_word) {
            index += 1;
            continue;
        }
        let word_start = index + usize::from(bracketed);
        let mut word_end = word_start;
        while word_end < bytes.len() && is_id_byte(bytes[word_end]) {
            word_end += 1;
        }
        let closed = word_end < bytes.len() && bytes[word_end] == b'>';
        if bracketed && (word_end == word_start || !closed) {
            // A lone `<`: step over it; the word after it, if any, is looked at on its own.
            index += 1;
            continue;
        }
        let token_end = if bracketed { word_end + 1 } else { word_end };
        if let Some(replaced) = replacement(&text[word_start..word_end]) {
            out.push_str(&text[copied..index]);
            out.push_str(&replaced);
            copied = token_end;
        }
        index = token_end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[&str]) -> Vec<ConceptId> {
        raw.iter().map(|id| ConceptId::parse(id).unwrap()).collect()
    }

    #[test]
    fn hides_and_reveals_whole_tokens_only_once() {
        let names = Pseudonyms::new(&ids(&["bo", "c1", "bob"]));
        let hidden = names.hide("Is <bo> next to <c1> and <bob>? <bo");
        assert_eq!(hidden, "Is <c1> next to <c2> and <c3>? <<c1>");
        assert_eq!(
            names.reveal(&hidden),
            "Is <bo> next to <c1> and <bob>? <<bo>"
        );
        assert_eq!(names.hide("a <<bo>> b"), "a <<c1>> b");
    }

    #[test]
    fn case_variants_and_bare_words_are_mentions() {
        let names = Pseudonyms::new(&ids(&["bo", "lina"]));
        let cases = [
            ("<Bo> and <BO> and <bO>", "<c1> and <c1> and <c1>"),
            (
                "bo sleeps; Bo barks. LINA!",
                "<c1> sleeps; <c1> barks. <c2>!",
            ),
            ("(bo), bo's, \"bo\", bo.", "(<c1>), <c1>'s, \"<c1>\", <c1>."),
            ("bo\nlina\tbo", "<c1>\n<c2>\t<c1>"),
            ("über bo 🐕 lina", "über <c1> 🐕 <c2>"),
        ];
        for (text, hidden) in cases {
            assert_eq!(names.hide(text), hidden, "{text:?}");
        }
        assert_eq!(names.reveal("<c1>, <C1> and <c2>"), "<bo>, <bo> and <lina>");
    }

    #[test]
    fn a_word_touching_an_id_character_is_not_a_mention() {
        let names = Pseudonyms::new(&ids(&["bo"]));
        for text in [
            "bob", "abo", "bo_2", "bo-like", "x-bo", "bo2", "_bo", "<bob>", "<bo-x>",
        ] {
            assert_eq!(names.hide(text), text, "{text:?}");
        }
    }

    #[test]
    fn ids_that_are_prefixes_of_other_ids_keep_apart() {
        let names = Pseudonyms::new(&ids(&["bo", "bob", "bo-b"]));
        assert_eq!(
            names.hide("bo, bob, bo-b, <BOB>, <Bo-B> and bobo"),
            "<c1>, <c2>, <c3>, <c2>, <c3> and bobo"
        );
        assert_eq!(names.reveal("<c1>, <c2>, <c3>"), "<bo>, <bob>, <bo-b>");
    }

    #[test]
    fn nothing_is_replaced_twice() {
        // `c2` is a real concept whose alias is `<c1>`; `bo`'s alias is `<c2>`. One pass means
        // `bo` → `<c2>` is never read again as the concept `c2`.
        let names = Pseudonyms::new(&ids(&["c2", "bo"]));
        let hidden = names.hide("<bo> met c2 and <c2>");
        assert_eq!(hidden, "<c2> met <c1> and <c1>");
        assert_eq!(names.reveal(&hidden), "<bo> met <c2> and <c2>");
        // Revealed ids are not revealed again either: `<c1>` → `<c2>` stays.
        assert_eq!(names.reveal("<c1>"), "<c2>");
    }

    #[test]
    fn the_exact_case_wins_and_the_turns_own_concepts_come_first() {
        let names = Pseudonyms::new(&ids(&["bo"])).also_hiding(&ids(&["Bo", "bo"]));
        assert_eq!(
            names.hide("<bo> <Bo> <BO> bo Bo"),
            "<c1> <c2> <c1> <c1> <c2>"
        );
        assert_eq!(names.reveal("<c1> <c2>"), "<bo> <Bo>");
    }

    #[test]
    fn other_registered_concepts_get_aliases_on_first_mention() {
        let names =
            Pseudonyms::new(&ids(&["bo"])).also_hiding(&ids(&["anna", "lina", "bo", "zed"]));
        assert_eq!(
            names.hide("<bo> plays with <lina>; Lina is <bo>'s friend"),
            "<c1> plays with <c2>; <c2> is <c1>'s friend"
        );
        // Aliases follow first mention, not the registry's order: `anna` and `zed` were never
        // mentioned, so nothing says they exist.
        assert_eq!(names.hide("zed"), "<c3>");
        assert_eq!(
            names.reveal("<c1> <c2> <c3> <c4>"),
            "<bo> <lina> <zed> <c4>"
        );
    }

    #[test]
    fn round_trip_restores_every_mention_in_its_bracketed_form() {
        let names = Pseudonyms::new(&ids(&["bo", "mam"])).also_hiding(&ids(&["lina"]));
        let text = "What is <bo> doing next to Mam? <lina> and bo, not bob; <c9> and <>.";
        let hidden = names.hide(text);
        for real in ["bo>", "bo,", "Mam", "lina", "mam"] {
            assert!(!hidden.contains(real), "{real} in {hidden}");
        }
        assert_eq!(
            names.reveal(&hidden),
            "What is <bo> doing next to <mam>? <lina> and <bo>, not bob; <c9> and <>."
        );
    }

    #[test]
    fn identity_changes_nothing() {
        let names = Pseudonyms::identity();
        assert_eq!(names.hide("<bo> bo <c1>"), "<bo> bo <c1>");
        assert_eq!(names.reveal("<c1>"), "<c1>");
    }
}

//! The one rule for concept identifiers, shared by edge and cloud.
//!
//! A concept id is 1–64 of `[A-Za-z0-9_-]`. The registry stores it bare (`bo`); prompts, cue
//! sets and the cloud's wire format show it bracketed (`<bo>`). Keeping both forms behind one
//! type means the bracket rule and the character set are checked in exactly one place, and
//! nothing that reaches a prompt can carry `<`, `>`, whitespace or control characters.

use std::fmt;

/// Longest bare id accepted, in bytes (ASCII only, so also in characters).
pub const MAX_CONCEPT_ID_LEN: usize = 64;

/// A validated concept id. Holds the bare form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConceptId(String);

/// Why a string is not a concept id; its `Display` is the client-facing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConceptId {
    raw: String,
    bracketed_required: bool,
}

impl fmt::Display for InvalidConceptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = &self.raw;
        if self.bracketed_required {
            write!(
                f,
                "invalid concept id {raw:?}: use \"<id>\" with 1 to {MAX_CONCEPT_ID_LEN} of A-Z, a-z, 0-9, '_' and '-' inside the brackets"
            )
        } else {
            write!(
                f,
                "invalid concept id {raw:?}: use 1 to {MAX_CONCEPT_ID_LEN} of A-Z, a-z, 0-9, '_' and '-'"
            )
        }
    }
}

impl std::error::Error for InvalidConceptId {}

impl ConceptId {
    /// Accepts the bare (`bo`) or bracketed (`<bo>`) form, surrounding whitespace trimmed.
    pub fn parse(raw: &str) -> Result<Self, InvalidConceptId> {
        let trimmed = raw.trim();
        let bare = trimmed
            .strip_prefix('<')
            .and_then(|rest| rest.strip_suffix('>'))
            .unwrap_or(trimmed);
        Self::from_bare(bare).ok_or_else(|| InvalidConceptId {
            raw: raw.to_string(),
            bracketed_required: false,
        })
    }

    /// Accepts only the bracketed form (`<bo>`), exactly as written: the cloud's wire format.
    pub fn parse_bracketed(raw: &str) -> Result<Self, InvalidConceptId> {
        raw.strip_prefix('<')
            .and_then(|rest| rest.strip_suffix('>'))
            .and_then(Self::from_bare)
            .ok_or_else(|| InvalidConceptId {
                raw: raw.to_string(),
                bracketed_required: true,
            })
    }

    fn from_bare(bare: &str) -> Option<Self> {
        let valid = (1..=MAX_CONCEPT_ID_LEN).contains(&bare.len())
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        valid.then(|| Self(bare.to_string()))
    }

    /// `bo`.
    pub fn bare(&self) -> &str {
        &self.0
    }

    /// `<bo>`.
    pub fn bracketed(&self) -> String {
        format!("<{}>", self.0)
    }

    pub fn into_bare(self) -> String {
        self.0
    }
}

/// Shows the bracketed form, as prompts and cue sets do.
impl fmt::Display for ConceptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_to_the_same_bare_id() {
        let bare = ConceptId::parse("bo").unwrap();
        let bracketed = ConceptId::parse(" <bo> ").unwrap();
        assert_eq!(bare, bracketed);
        assert_eq!(bare.bare(), "bo");
        assert_eq!(bare.bracketed(), "<bo>");
        assert_eq!(bare.to_string(), "<bo>");
    }

    #[test]
    fn the_character_set_and_length_are_enforced() {
        for bad in [
            "",
            "<>",
            "<<bo>>",
            "b o",
            "bo>",
            "<bo",
            "bö",
            "<|im_start|>",
            "a\nb",
            "a+b",
        ] {
            assert!(ConceptId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ConceptId::parse(&"a".repeat(MAX_CONCEPT_ID_LEN)).is_ok());
        let long = ConceptId::parse(&"a".repeat(MAX_CONCEPT_ID_LEN + 1)).unwrap_err();
        assert!(long.to_string().contains("1 to 64"), "{long}");
    }

    #[test]
    fn the_cloud_form_requires_brackets_exactly() {
        assert_eq!(ConceptId::parse_bracketed("<bo>").unwrap().bare(), "bo");
        for bad in ["bo", " <bo>", "<bo> ", "<b o>", "<>", "<<bo>>"] {
            let err = ConceptId::parse_bracketed(bad).unwrap_err();
            assert!(err.to_string().contains("\"<id>\""), "{bad:?}: {err}");
        }
    }
}

//! The caps on user text that both services enforce, in one table. The edge refuses a request
//! over a cap before any work (decoding, detection, the cloud call); the reasoner refuses
//! whatever reaches it directly. Over a cap is 413 with a type naming the cap.
//!
//! Pseudonymization rewrites ids on the way to the cloud (`<a>` becomes `<c12>`), which can
//! lengthen text by at most 5/3, so the reasoner's caps on question and description text are
//! [`WIRE_SLACK`] times the edge's.

/// Longest question, in characters.
pub const MAX_QUESTION_CHARS: usize = 4_000;

/// Longest concept description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4_000;

/// Longest cue location string (`location-absolute`, `location-relative`) the reasoner
/// accepts, in characters. The edge's own cue sets stay under 64 by their schema.
pub const MAX_CUE_TEXT_CHARS: usize = 256;

/// Largest `max_answer_tokens` a client may ask for.
pub const MAX_ANSWER_TOKENS: u32 = 4_096;

/// Most earlier turns of a conversation the edge sends with a turn (the newest ones) and the
/// reasoner accepts.
pub const MAX_HISTORY_TURNS: usize = 32;

/// Longest earlier question or answer, in characters, in a turn's history: the edge cuts a
/// longer stored answer to this before sending it; the reasoner accepts [`WIRE_SLACK`] times it.
pub const MAX_HISTORY_TEXT_CHARS: usize = 8_000;

/// The reasoner's default budget for a turn's history, in characters of earlier questions and
/// answers (about 4,000 tokens of English): older turns past it are dropped first.
pub const DEFAULT_HISTORY_BUDGET_CHARS: usize = 16_000;

/// How much longer the reasoner lets question and description text be than the edge does.
pub const WIRE_SLACK: usize = 2;

/// The edge's default largest request body (`SLC_MAX_BODY_BYTES`).
pub const EDGE_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The reasoner's default largest request body (`SLC_REASONER_MAX_BODY_BYTES`): what the edge
/// accepts, plus room for the descriptions and cues it adds around the image, so a request the
/// edge took is never refused by the cloud behind it.
pub const REASONER_MAX_BODY_BYTES: usize = EDGE_MAX_BODY_BYTES + 8 * 1024 * 1024;

/// `Err` with a client-facing message when `text` has more than `max` characters. Counts
/// without collecting, and stops at `max + 1`.
pub fn check_chars(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() <= max || text.chars().nth(max).is_none() {
        return Ok(());
    }
    Err(format!(
        "{what} has more than {max} characters ({} bytes)",
        text.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_not_bytes_are_counted() {
        assert!(check_chars("q", &"é".repeat(4), 4).is_ok());
        assert!(check_chars("q", &"é".repeat(5), 4).is_err());
        assert!(check_chars("q", "", 0).is_ok());
        let message = check_chars("the question", &"x".repeat(11), 10).unwrap_err();
        assert!(message.contains("more than 10 characters"), "{message}");
    }
}

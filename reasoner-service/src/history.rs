//! A conversation's earlier turns on the cloud side: checked against the caps of
//! `shared_types::limits`, then fitted to the character budget newest first, so the oldest
//! turns are the ones left out. Only the answer call gets them, as prior chat messages; the
//! identity and verification calls are about the image and the descriptions alone.

use shared_types::limits::{MAX_HISTORY_TEXT_CHARS, MAX_HISTORY_TURNS, WIRE_SLACK, check_chars};
use shared_types::{HistoryTrace, PriorTurn};

use crate::error::ReasonerError;

/// At most [`MAX_HISTORY_TURNS`] turns, each text non-empty and within its cap.
pub fn validate_history(history: &[PriorTurn]) -> Result<(), ReasonerError> {
    if history.len() > MAX_HISTORY_TURNS {
        return Err(ReasonerError::too_large(
            "too_many_history_turns",
            format!("at most {MAX_HISTORY_TURNS} earlier turns per request"),
        ));
    }
    for (index, turn) in history.iter().enumerate() {
        for (what, text) in [("question", &turn.question), ("answer", &turn.answer)] {
            check_chars(
                &format!("history[{index}].{what}"),
                text,
                MAX_HISTORY_TEXT_CHARS * WIRE_SLACK,
            )
            .map_err(|message| ReasonerError::too_large("history_text_too_long", message))?;
        }
    }
    Ok(())
}

/// The newest turns whose questions and answers fit in `budget_chars` together, oldest
/// first, and the trace of what was kept; `None` for the trace without history.
pub fn fit_history(
    history: Vec<PriorTurn>,
    budget_chars: usize,
) -> (Vec<PriorTurn>, Option<HistoryTrace>) {
    if history.is_empty() {
        return (history, None);
    }
    let received = history.len();
    let mut used = 0usize;
    let mut kept = 0usize;
    for turn in history.iter().rev() {
        let chars = turn.question.chars().count() + turn.answer.chars().count();
        if used + chars > budget_chars {
            break;
        }
        used += chars;
        kept += 1;
    }
    let sent: Vec<PriorTurn> = history.into_iter().skip(received - kept).collect();
    let trace = HistoryTrace {
        budget_chars: budget_chars as u64,
        turns_received: received as u32,
        turns_sent: kept as u32,
        turns_dropped: (received - kept) as u32,
        chars_sent: used as u64,
    };
    (sent, Some(trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(question: &str, answer: &str) -> PriorTurn {
        PriorTurn {
            question: question.into(),
            answer: answer.into(),
        }
    }

    #[test]
    fn the_oldest_turns_are_dropped_first() {
        let history = vec![turn("aaaa", "aaaa"), turn("bbb", "bbb"), turn("cc", "cc")];
        let (sent, trace) = fit_history(history.clone(), 10);
        assert_eq!(sent, history[1..]);
        let trace = trace.unwrap();
        assert_eq!((trace.turns_sent, trace.turns_dropped), (2, 1));
        assert_eq!((trace.chars_sent, trace.budget_chars), (10, 10));
        // A newest turn over the budget on its own sends nothing older either.
        let (sent, trace) = fit_history(vec![turn("a", "b"), turn("long", "long")], 5);
        assert!(sent.is_empty());
        assert_eq!(trace.unwrap().turns_dropped, 2);
        assert_eq!(fit_history(Vec::new(), 10), (Vec::new(), None));
    }

    #[test]
    fn caps_are_checked() {
        let many = vec![turn("q", "a"); MAX_HISTORY_TURNS + 1];
        assert!(validate_history(&many).is_err());
        assert!(validate_history(&many[1..]).is_ok());
        let long = "x".repeat(MAX_HISTORY_TEXT_CHARS * WIRE_SLACK + 1);
        assert!(validate_history(&[turn("q", &long)]).is_err());
    }
}

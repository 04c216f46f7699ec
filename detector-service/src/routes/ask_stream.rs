//! The streamed half of `POST /v1/ask`: the reasoner's event stream relayed to the app with
//! the pseudonyms revealed, as `verification` (the refined cues) and `delta` events.
//!
//! A delta may end inside an alias (`<c` now, `1>` in the next piece), so the revealer holds
//! back the text after the last whitespace until the word is complete: an alias never
//! contains whitespace. The app sees every byte, one word late at most.

use std::time::Instant;

use axum::response::sse::Event;
use shared_types::{
    AnswerDelta, DetectResponse, EVENT_DELTA, EVENT_VERIFICATION, ReasonRequest, ReasonResponse,
    VerificationEvent,
};
use tokio::sync::mpsc;

use crate::pseudonyms::Pseudonyms;
use crate::reasoner_client::{CallTags, ReasonerError, StreamedPiece};
use crate::routes::ask::keep_boxes;
use crate::state::AppState;

/// A word longer than this is let through unrevealed-so-far rather than held without end (a
/// language without spaces still streams).
const MAX_HELD_CHARS: usize = 64;

/// Reveals aliases in a stream of pieces, holding back the unfinished last word.
pub struct DeltaRevealer<'a> {
    names: &'a Pseudonyms,
    held: String,
}

impl<'a> DeltaRevealer<'a> {
    pub fn new(names: &'a Pseudonyms) -> Self {
        Self {
            names,
            held: String::new(),
        }
    }

    /// The text that can go out now, revealed; `None` while everything is held.
    pub fn push(&mut self, text: &str) -> Option<String> {
        self.held.push_str(text);
        let cut = match self.held.rfind(char::is_whitespace) {
            Some(index) => index + self.held[index..].chars().next().map_or(1, char::len_utf8),
            None if self.held.chars().count() > MAX_HELD_CHARS => self.held.len(),
            None => 0,
        };
        if cut == 0 {
            return None;
        }
        let rest = self.held.split_off(cut);
        let ready = std::mem::replace(&mut self.held, rest);
        Some(self.names.reveal(&ready))
    }

    /// The held rest, at the end of the stream.
    pub fn finish(self) -> Option<String> {
        (!self.held.is_empty()).then(|| self.names.reveal(&self.held))
    }
}

/// The reasoner's streamed turn, relayed to `events`; also returns the time to the first
/// answer text sent, from `started`.
pub async fn reason_streamed(
    state: &AppState,
    request: &ReasonRequest,
    tags: CallTags<'_>,
    names: &Pseudonyms,
    events: &mpsc::Sender<Event>,
    started: Instant,
    detection: Option<&DetectResponse>,
) -> Result<(ReasonResponse, f64, Option<f64>), ReasonerError> {
    let mut revealer = DeltaRevealer::new(names);
    let mut first_token_ms = None;
    let mut send_delta = |text: String| {
        if first_token_ms.is_none() {
            let elapsed = started.elapsed().as_secs_f64();
            state.metrics.ask_first_answer_token.observe(elapsed);
            first_token_ms = Some(elapsed * 1e3);
        }
        json_event(EVENT_DELTA, &AnswerDelta { text })
    };
    let mut outgoing = Vec::new();
    let (response, reason_ms) = state
        .reasoner
        .reason_stream(request, tags, |piece| {
            match piece {
                StreamedPiece::Verification(cues) => {
                    let mut refined_cues = names.reveal_cues(&cues);
                    if let Some(detection) = detection {
                        keep_boxes(&mut refined_cues, &detection.cues);
                    }
                    outgoing.push(json_event(
                        EVENT_VERIFICATION,
                        &VerificationEvent { refined_cues },
                    ));
                }
                StreamedPiece::Delta(text) => {
                    if let Some(ready) = revealer.push(&text) {
                        outgoing.push(send_delta(ready));
                    }
                }
            }
            let ready = std::mem::take(&mut outgoing);
            async move {
                for event in ready {
                    let _ = events.send(event).await;
                }
            }
        })
        .await?;
    if let Some(rest) = revealer.finish() {
        let _ = events.send(send_delta(rest)).await;
    }
    Ok((response, reason_ms, first_token_ms))
}

fn json_event<T: serde::Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_split_across_pieces_are_revealed_whole() {
        let id = shared_types::ConceptId::parse("bo").unwrap();
        let names = Pseudonyms::new([&id]);
        let alias = names.hide("<bo>");
        assert_ne!(alias, "<bo>");
        let text = format!("Yes, {alias} is on the sofa next to {alias}.");
        for size in 1..8 {
            let mut revealer = DeltaRevealer::new(&names);
            let chars: Vec<char> = text.chars().collect();
            let mut out = String::new();
            for piece in chars.chunks(size) {
                out.extend(revealer.push(&piece.iter().collect::<String>()));
            }
            out.extend(revealer.finish());
            assert_eq!(out, "Yes, <bo> is on the sofa next to <bo>.", "size {size}");
        }
    }

    #[test]
    fn a_long_word_is_not_held_forever() {
        let names = Pseudonyms::identity();
        let mut revealer = DeltaRevealer::new(&names);
        assert_eq!(revealer.push("abc"), None);
        assert!(revealer.push(&"x".repeat(MAX_HELD_CHARS)).is_some());
        assert_eq!(revealer.finish(), None);
    }
}

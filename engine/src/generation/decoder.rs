//! The decode loop's state and its three steps: the next run of tokens (one chosen, then the
//! run the grammar forces after it), the stop checks over that run, and emitting the text that
//! became final. `super::generate` feeds each run to the model between them.

use super::sampling::{SplitMix64, apply_mask, choose};
use super::text_stream::TextStream;
use super::{Decoding, Detokenize, FinishReason, SamplingParams, TokenConstraint, ms};
use crate::error::Result;
use std::time::Instant;
use tch::Tensor;

/// `'p` borrows the settings, `'d` the collaborators of [`Decoding`].
pub(super) struct Decoder<'p, 'd> {
    params: &'p SamplingParams,
    detokenizer: Option<&'d dyn Detokenize>,
    constraint: Option<&'d mut dyn TokenConstraint>,
    on_text: Option<&'d mut dyn FnMut(&str) -> bool>,
    rng: SplitMix64,
    /// When the call began, for the time to the first token.
    started: Instant,
    pub(super) first_token_ms: f64,
    generated: Vec<i64>,
    /// The visible text after the last run, when the stop-string check decoded it already.
    decoded: Option<String>,
    /// The text cut before the stop string that ended generation.
    text_cut: Option<String>,
    stream: TextStream,
}

impl<'p, 'd> Decoder<'p, 'd> {
    pub(super) fn new(
        params: &'p SamplingParams,
        decoding: Decoding<'d>,
        started: Instant,
    ) -> Self {
        Decoder {
            params,
            detokenizer: decoding.detokenizer,
            constraint: decoding.constraint,
            on_text: decoding.on_text,
            rng: SplitMix64(params.seed),
            started,
            first_token_ms: 0.0,
            generated: Vec::new(),
            decoded: None,
            text_cut: None,
            stream: TextStream::default(),
        }
    }

    pub(super) fn generated(&self) -> &[i64] {
        &self.generated
    }

    /// Step one: a token chosen from `logits` under the grammar's mask, then (with
    /// jump-forward) the tokens the grammar forces after it, as many as `max_new_tokens` allows.
    /// The grammar has consumed the whole run.
    pub(super) fn next_run(&mut self, logits: &Tensor) -> Result<Vec<i64>> {
        let scores = match self.constraint.as_deref_mut() {
            Some(constraint) => apply_mask(logits, &constraint.allowed_tokens()?)?,
            None => logits.shallow_clone(),
        };
        let chosen = choose(&scores, self.params, &mut self.rng)?;
        if self.generated.is_empty() {
            self.first_token_ms = ms(self.started);
        }
        let mut run = vec![chosen];
        let Some(constraint) = self.constraint.as_deref_mut() else {
            return Ok(run);
        };
        constraint.consume(&[chosen as u32], false)?;
        if self.params.jump_forward && !constraint.is_finished() {
            let room = self.params.max_new_tokens - self.generated.len() - 1;
            let forced: Vec<u32> = constraint.forced_tokens()?.into_iter().take(room).collect();
            if !forced.is_empty() {
                constraint.consume(&forced, true)?;
                run.extend(forced.iter().map(|&token| i64::from(token)));
            }
        }
        Ok(run)
    }

    /// Step two: appends `run` token by token and says why generation ends, if it does: an
    /// eos id (kept in the ids, not in the text), a stop string (the text is cut before it), or
    /// the grammar's end once the whole run is in.
    pub(super) fn append_checked(&mut self, run: &[i64]) -> Option<FinishReason> {
        self.decoded = None;
        for (i, &token) in run.iter().enumerate() {
            self.generated.push(token);
            if self.params.stop_token_ids.contains(&token) {
                return Some(FinishReason::Stop);
            }
            if let Some(text) = self.text_for_stop_strings() {
                let found = self
                    .params
                    .stop_strings
                    .iter()
                    .filter_map(|stop| text.find(stop.as_str()))
                    .min();
                if let Some(cut) = found {
                    self.text_cut = Some(text[..cut].to_string());
                    return Some(FinishReason::Stop);
                }
                // No stop token is in `generated` here, so this is also the visible text.
                self.decoded = Some(text);
            }
            if i + 1 == run.len() && self.constraint.as_deref().is_some_and(|c| c.is_finished()) {
                return Some(FinishReason::Stop);
            }
        }
        None
    }

    /// Step three: hands the text that became final to `on_text`; false when it asks to stop.
    pub(super) fn emit(&mut self) -> bool {
        if self.on_text.is_none() {
            return true;
        }
        let text = match self.decoded.take() {
            Some(text) => text,
            None => self.visible_text(),
        };
        let piece = self
            .stream
            .next_piece(&text, &self.params.stop_strings, false);
        match (piece, self.on_text.as_deref_mut()) {
            (Some(piece), Some(callback)) => callback(&piece),
            _ => true,
        }
    }

    /// The output's text and ids. Unless generation was cancelled, the text not yet emitted
    /// goes to `on_text` (the caller has the whole text in the output, so a late "stop" there
    /// changes nothing).
    pub(super) fn finish(mut self, reason: FinishReason) -> (String, Vec<i64>) {
        let text = match self.text_cut.take() {
            Some(text) => text,
            None => self.visible_text(),
        };
        if reason != FinishReason::Cancelled
            && let Some(callback) = self.on_text
            && let Some(piece) = self
                .stream
                .next_piece(&text, &self.params.stop_strings, true)
        {
            let _ = callback(&piece);
        }
        (text, self.generated)
    }

    /// The text of `generated` when there are stop strings to look for in it.
    fn text_for_stop_strings(&self) -> Option<String> {
        let detokenizer = self
            .detokenizer
            .filter(|_| !self.params.stop_strings.is_empty())?;
        Some(decode(detokenizer, &self.generated))
    }

    /// The text of `generated` without its eos ids.
    fn visible_text(&self) -> String {
        let visible: Vec<i64> = self
            .generated
            .iter()
            .copied()
            .filter(|token| !self.params.stop_token_ids.contains(token))
            .collect();
        self.detokenizer
            .map_or_else(String::new, |detokenizer| decode(detokenizer, &visible))
    }
}

fn decode(detokenizer: &dyn Detokenize, ids: &[i64]) -> String {
    let ids: Vec<u32> = ids.iter().map(|&token| token as u32).collect();
    detokenizer.decode(&ids)
}

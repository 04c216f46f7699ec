//! Incremental detokenization for the text callback: only text that is final goes out.

/// What has been handed out so far.
#[derive(Default)]
pub(super) struct TextStream {
    emitted: String,
}

impl TextStream {
    /// The new final text of `text` (the whole visible text so far), holding back a trailing
    /// replacement character (an incomplete character) and any suffix that starts a stop string.
    pub(super) fn next_piece(
        &mut self,
        text: &str,
        stop_strings: &[String],
        finished: bool,
    ) -> Option<String> {
        let mut end = text.len();
        if !finished {
            if text.ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
            let held = stop_strings
                .iter()
                .flat_map(|stop| {
                    (1..stop.len())
                        .rev()
                        .filter(|&n| stop.is_char_boundary(n) && text[..end].ends_with(&stop[..n]))
                        .take(1)
                })
                .max()
                .unwrap_or(0);
            end -= held;
        }
        // Decoding a longer id sequence only appends, except around incomplete characters;
        // a rewrite of already emitted text is never re-sent.
        if end <= self.emitted.len() || !text.starts_with(&self.emitted) {
            return None;
        }
        let piece = text[self.emitted.len()..end].to_string();
        self.emitted.push_str(&piece);
        Some(piece)
    }
}

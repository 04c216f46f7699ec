//! An incremental parser of server-sent events (the WHATWG "event stream" format), for the two
//! streams this workspace reads: the large model's OpenAI stream (`data: {...}` chunks, then
//! `data: [DONE]`) on the reasoner, and the reasoner's `/v1/reason` stream on the edge.
//!
//! Bytes go in as they arrive, in chunks cut anywhere (inside a line, inside a UTF-8
//! character, between `\r` and `\n`); whole events come out. Lines end in `\n`, `\r\n` or a
//! lone `\r`; a line starting with `:` is a comment (keep-alives); `data` lines of one event are
//! joined with `\n`; a blank line dispatches the event, and an event with no `data` line is
//! dropped, as the specification says. The buffered partial line is capped, so a peer that
//! never ends a line costs a bounded amount of memory.

/// One dispatched event. `event` is `None` when the stream gave no `event:` field (the
/// specification's default type, "message").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line (or an event's data) grew past the parser's cap without ending.
    TooLong { max_bytes: usize },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLong { max_bytes } => write!(
                formatter,
                "an event-stream line or event is longer than {max_bytes} bytes"
            ),
        }
    }
}

impl std::error::Error for SseError {}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct SseParser {
    /// The current line's bytes so far (not yet valid UTF-8 necessarily: a chunk may end
    /// inside a character).
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_carriage_return: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    max_bytes: usize,
}

impl SseParser {
    /// A parser that refuses lines and events over `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            after_carriage_return: false,
            event: None,
            data: String::new(),
            has_data: false,
            id: None,
            max_bytes,
        }
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &byte in chunk {
            let carriage_return_before = std::mem::replace(&mut self.after_carriage_return, false);
            match byte {
                b'\n' if carriage_return_before => {}
                b'\n' | b'\r' => {
                    self.after_carriage_return = byte == b'\r';
                    if let Some(event) = self.end_line()? {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() >= self.max_bytes {
                        return Err(SseError::TooLong {
                            max_bytes: self.max_bytes,
                        });
                    }
                    self.line.push(byte);
                }
            }
        }
        Ok(events)
    }

    /// The stream ended: a final event without its blank line is not dispatched (the
    /// specification discards it), so a stream cut mid-event loses that event, not more.
    pub fn finish(self) -> bool {
        self.line.is_empty() && !self.has_data
    }

    fn end_line(&mut self) -> Result<Option<SseEvent>, SseError> {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_bytes {
                    return Err(SseError::TooLong {
                        max_bytes: self.max_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` and unknown fields are ignored: nothing here reconnects.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::replace(&mut self.has_data, false) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], size: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 16);
        let mut events = Vec::new();
        for chunk in input.chunks(size) {
            events.extend(parser.push(chunk).unwrap());
        }
        events
    }

    #[test]
    fn openai_chunks_parse_whatever_the_chunk_boundaries() {
        let input =
            "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":\"é\"}\r\n\r\ndata: [DONE]\r\r";
        for size in 1..input.len() {
            let events = parse_in_chunks(input.as_bytes(), size);
            let data: Vec<&str> = events.iter().map(|event| event.data.as_str()).collect();
            assert_eq!(
                data,
                ["{\"a\":1}", "{\"b\":\"é\"}", "[DONE]"],
                "size {size}"
            );
            assert!(events.iter().all(|event| event.event.is_none()));
        }
    }

    #[test]
    fn named_events_multiline_data_and_fields() {
        let input =
            b"event: delta\ndata: line one\ndata:line two\nid: 7\nretry: 10\n\nevent: ping\n\n";
        let events = parse_in_chunks(input, 3);
        assert_eq!(
            events,
            [SseEvent {
                event: Some("delta".into()),
                data: "line one\nline two".into(),
                id: Some("7".into()),
            }]
        );
    }

    #[test]
    fn a_cut_event_is_not_dispatched_and_finish_says_so() {
        let mut parser = SseParser::new(1024);
        assert!(parser.push(b"data: {\"half\":").unwrap().is_empty());
        assert!(!parser.finish());
        let mut parser = SseParser::new(1024);
        assert_eq!(parser.push(b"data: x\n\n").unwrap().len(), 1);
        assert!(parser.finish());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::new(16);
        assert_eq!(
            parser.push(&[b'a'; 17]),
            Err(SseError::TooLong { max_bytes: 16 })
        );
        let mut parser = SseParser::new(16);
        let many = b"data: 0123456\n".repeat(3);
        assert!(parser.push(&many).is_err());
    }
}

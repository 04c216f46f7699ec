//! The query image: validated, then forwarded as a `data:` URI. It lives only in memory for
//! the turn; nothing here or downstream writes it to disk or to the database.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::error::ReasonerError;

/// The query image as a `data:<type>;base64,<payload>` URI, held once per turn and shared by
/// every upstream call of the turn (cloning is a reference count). It is kept in two pieces,
/// a static prefix and the payload, so that the payload can be the very buffer the request's
/// JSON was parsed into: no copy of the image is made after parsing.
///
/// Invariant: only ASCII letters, digits and `+/=:;,` — nothing JSON escapes — so the pieces
/// can be spliced verbatim into a JSON string (see `upstream::RequestBody`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUri {
    /// `data:<type>;base64,`
    prefix: Bytes,
    payload: Bytes,
}

impl DataUri {
    /// The URI's bytes in order: prefix, payload.
    pub fn pieces(&self) -> [&Bytes; 2] {
        [&self.prefix, &self.payload]
    }

    pub fn len(&self) -> usize {
        self.prefix.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for DataUri {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in self.pieces() {
            // ASCII by construction (validated base64 and a static prefix).
            formatter.write_str(std::str::from_utf8(piece).map_err(|_| std::fmt::Error)?)?;
        }
        Ok(())
    }
}

/// Base64 characters of the payload's start decoded to read the file signature: a multiple
/// of 4, small enough for the stack.
const SIGNATURE_CHARS: usize = 4 * 64;

/// Turns the request's image (bare base64 or a `data:image/...;base64,` URL) into a data URI
/// whose media type comes from the decoded bytes' signature, not from the client's claim.
///
/// The payload is checked in place and becomes the URI's payload without a copy (unless it
/// was line-wrapped and had to be compacted).
pub fn image_data_uri(image: String) -> Result<DataUri, ReasonerError> {
    let payload_start = match image.strip_prefix("data:") {
        Some(rest) => {
            let (header, _) = rest.split_once(',').ok_or_else(|| {
                invalid_image("the data URL has no comma before its payload".into())
            })?;
            if !header.ends_with(";base64") {
                return Err(invalid_image("the data URL must be base64-encoded".into()));
            }
            "data:".len() + header.len() + ",".len()
        }
        None => 0,
    };
    let payload = &image[payload_start..];
    if payload.is_empty() {
        return Err(invalid_image("the image is empty".into()));
    }
    // Line-wrapped base64 is accepted. The common unwrapped case is validated as it is; only
    // a payload that fails is searched for whitespace and, if it has some, compacted.
    let (payload, media_type) = match validate_base64_image(payload.as_bytes()) {
        Ok(media_type) => (Bytes::from(image).slice(payload_start..), media_type),
        Err(error) if !payload.bytes().any(|b| b.is_ascii_whitespace()) => return Err(error),
        Err(_) => {
            let compact: String = payload
                .chars()
                .filter(|character| !character.is_ascii_whitespace())
                .collect();
            if compact.is_empty() {
                return Err(invalid_image("the image is empty".into()));
            }
            let media_type = validate_base64_image(compact.as_bytes())?;
            (Bytes::from(compact), media_type)
        }
    };
    Ok(DataUri {
        prefix: Bytes::from_static(data_uri_prefix(media_type).as_bytes()),
        payload,
    })
}

fn data_uri_prefix(media_type: &'static str) -> &'static str {
    match media_type {
        "image/png" => "data:image/png;base64,",
        "image/jpeg" => "data:image/jpeg;base64,",
        "image/gif" => "data:image/gif;base64,",
        "image/webp" => "data:image/webp;base64,",
        other => unreachable!("sniff_media_type does not return {other}"),
    }
}

/// Checks that `encoded` is canonical padded base64 (what a whole-payload decode with the
/// standard engine accepts) without decoding it all, and returns the media type its first
/// bytes announce.
///
/// A whole decode was ~30% of the reasoner's instructions per turn. Here the payload is
/// checked in one branch-free pass over its symbols, then only its start (for the signature)
/// and its last quantum (padding and unused bits) are decoded. That every symbol is in the
/// alphabet is also what makes splicing the URI into JSON safe.
fn validate_base64_image(encoded: &[u8]) -> Result<&'static str, ReasonerError> {
    let not_base64 =
        |reason: String| invalid_image(format!("the image is not valid base64: {reason}"));
    if !encoded.len().is_multiple_of(4) {
        return Err(not_base64(format!(
            "its length, {}, is not a multiple of 4",
            encoded.len()
        )));
    }
    // Up to two `=` at the very end; anywhere else they fail the symbol check.
    let padding = encoded
        .iter()
        .rev()
        .take(2)
        .take_while(|&&byte| byte == b'=')
        .count();
    let symbols = &encoded[..encoded.len() - padding];
    if !symbols.chunks(64).all(|chunk| {
        chunk
            .iter()
            .fold(true, |ok, &byte| ok & is_base64_symbol(byte))
    }) {
        let offset = symbols
            .iter()
            .position(|&byte| !is_base64_symbol(byte))
            .expect("a symbol failed the check");
        return Err(not_base64(
            base64::DecodeError::InvalidByte(offset, symbols[offset]).to_string(),
        ));
    }
    let mut decoded = [0u8; SIGNATURE_CHARS / 4 * 3];
    let last_quantum = &encoded[encoded.len() - 4..];
    STANDARD
        .decode_slice(last_quantum, &mut decoded)
        .map_err(|error| not_base64(format!("{error} (in the last 4 symbols)")))?;
    let start = &encoded[..encoded.len().min(SIGNATURE_CHARS)];
    let written = STANDARD
        .decode_slice(start, &mut decoded)
        .map_err(|error| not_base64(error.to_string()))?;
    sniff_media_type(&decoded[..written])
        .ok_or_else(|| invalid_image("the image is not a PNG, JPEG, GIF or WebP file".into()))
}

/// `A-Z a-z 0-9 + /`, as a branch-free expression the compiler turns into SIMD compares.
fn is_base64_symbol(byte: u8) -> bool {
    let lower = byte | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (byte.wrapping_sub(b'0') < 10)
        | (byte == b'+')
        | (byte == b'/')
}

/// The image format from its leading bytes.
pub fn sniff_media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn invalid_image(message: String) -> ReasonerError {
    ReasonerError::invalid("invalid_image", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0];

    #[test]
    fn bare_base64_and_data_urls_become_data_uris_typed_by_content() {
        let encoded = STANDARD.encode(PNG_SIGNATURE);
        let expected = format!("data:image/png;base64,{encoded}");
        assert_eq!(
            image_data_uri(encoded.clone()).unwrap().to_string(),
            expected
        );
        // A wrong claimed type is corrected from the bytes.
        let claimed = format!("data:image/jpeg;base64,{encoded}");
        assert_eq!(image_data_uri(claimed).unwrap().to_string(), expected);
    }

    #[test]
    fn images_longer_than_the_decoded_start_round_trip() {
        // Sizes around the signature boundary, each with every padding length.
        for size in [190, 191, 192, 193, 194, 5000, 5001, 5002] {
            let mut bytes = PNG_SIGNATURE.to_vec();
            bytes.resize(size, 7);
            let encoded = STANDARD.encode(&bytes);
            let uri = image_data_uri(encoded.clone()).unwrap().to_string();
            assert_eq!(uri, format!("data:image/png;base64,{encoded}"));
            // Nothing in it that JSON would escape.
            assert_eq!(serde_json::to_string(&uri).unwrap(), format!("\"{uri}\""));
        }
    }

    #[test]
    fn a_bad_byte_far_into_the_payload_is_reported_at_its_offset() {
        let mut encoded = STANDARD.encode([PNG_SIGNATURE, &[1u8; 3000]].concat());
        encoded.replace_range(2000..2001, "*");
        let Err(ReasonerError::Invalid { message, .. }) = image_data_uri(encoded) else {
            panic!("accepted");
        };
        assert!(message.contains("offset 2000"), "{message}");
        // Padding in the middle is refused too, also where a validation chunk ends.
        for at in [1500, SIGNATURE_CHARS - 4, SIGNATURE_CHARS] {
            let mut encoded = STANDARD.encode([PNG_SIGNATURE, &[1u8; 3000]].concat());
            encoded.replace_range(at..at + 4, "AA==");
            assert!(image_data_uri(encoded).is_err(), "padding at {at}");
        }
    }

    #[test]
    fn line_wrapped_base64_is_accepted_and_compacted() {
        let mut bytes = PNG_SIGNATURE.to_vec();
        bytes.resize(200, 3);
        let encoded = STANDARD.encode(&bytes);
        let wrapped: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        assert_ne!(wrapped, encoded);
        let expected = format!("data:image/png;base64,{encoded}");
        assert_eq!(
            image_data_uri(wrapped.clone()).unwrap().to_string(),
            expected
        );
        assert_eq!(
            image_data_uri(format!("data:image/png;base64,{wrapped}"))
                .unwrap()
                .to_string(),
            expected
        );
        assert!(image_data_uri(" \n ".into()).is_err());
    }

    #[test]
    fn the_symbol_check_agrees_with_the_base64_engine_on_every_byte() {
        // One quantum with each byte value in each position: accepted exactly when the
        // engine decodes it.
        for byte in 0..=255u8 {
            for position in 0..4 {
                let mut quantum = *b"QUJD";
                quantum[position] = byte;
                let mut payload = STANDARD.encode(PNG_SIGNATURE).into_bytes();
                payload.extend_from_slice(&quantum);
                payload.extend_from_slice(b"QUJD");
                let ours = validate_base64_image(&payload).is_ok();
                let engine = STANDARD.decode(&payload).is_ok();
                assert_eq!(ours, engine, "byte {byte:#04x} at {position}");
            }
        }
        // Non-canonical final bits are refused, as by the engine.
        let mut payload = STANDARD.encode([PNG_SIGNATURE, b"x"].concat()).into_bytes();
        let last_symbol = payload.len() - 2;
        payload[last_symbol] = b'B';
        assert!(STANDARD.decode(&payload).is_err());
        assert!(validate_base64_image(&payload).is_err());
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            "",
            "!!!",
            "data:image/png,abc",
            &STANDARD.encode(b"hello world"),
        ] {
            assert!(image_data_uri(junk.to_owned()).is_err(), "{junk:?}");
        }
    }
}

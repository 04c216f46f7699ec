//! The query image: validated, then forwarded as a `data:` URI. It lives only in memory for
//! the turn; nothing here or downstream writes it to disk or to the database.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::error::ReasonerError;

/// The query image as a `data:<type>;base64,<payload>` URI, held once per turn and shared by
/// every upstream call of the turn (cloning is a reference count).
///
/// Invariant: only ASCII letters, digits and `+/=:;,-` — nothing JSON escapes — so the bytes
/// can be spliced verbatim into a JSON string (see `upstream::RequestBody`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUri(Bytes);

impl DataUri {
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Built from a `String` in `image_data_uri`, never modified.
        std::str::from_utf8(&self.0).expect("a data URI is ASCII")
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Base64 characters decoded per step while validating: a multiple of 4, so every step but
/// the last has no padding, and small enough for the stack.
const VALIDATION_CHUNK_CHARS: usize = 4 * 256;

/// Turns the request's image (bare base64 or a `data:image/...;base64,` URL) into a data URI
/// whose media type comes from the decoded bytes' signature, not from the client's claim.
///
/// The payload is decoded only to validate it and read its signature, a chunk at a time into a
/// stack buffer: under load the turn's one heap copy of the image is the URI itself.
pub fn image_data_uri(image: &str) -> Result<DataUri, ReasonerError> {
    let payload = match image.strip_prefix("data:") {
        Some(rest) => {
            let (header, data) = rest.split_once(',').ok_or_else(|| {
                invalid_image("the data URL has no comma before its payload".into())
            })?;
            if !header.ends_with(";base64") {
                return Err(invalid_image("the data URL must be base64-encoded".into()));
            }
            data
        }
        None => image,
    };
    if payload.is_empty() {
        return Err(invalid_image("the image is empty".into()));
    }
    // Line-wrapped base64 is accepted. The common unwrapped case is validated as it is; only
    // a payload that fails is searched for whitespace and, if it has some, compacted.
    let (compact, media_type): (std::borrow::Cow<'_, str>, _) =
        match validate_base64_image(payload.as_bytes()) {
            Ok(media_type) => (payload.into(), media_type),
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
                (compact.into(), media_type)
            }
        };
    let prefix_len = "data:".len() + media_type.len() + ";base64,".len();
    let mut uri = String::with_capacity(prefix_len + compact.len());
    uri.push_str("data:");
    uri.push_str(media_type);
    uri.push_str(";base64,");
    uri.push_str(&compact);
    Ok(DataUri(Bytes::from(uri)))
}

/// Decodes the whole payload (so junk is refused) without keeping it, and returns the media
/// type its first bytes announce.
fn validate_base64_image(encoded: &[u8]) -> Result<&'static str, ReasonerError> {
    let mut decoded = [0u8; VALIDATION_CHUNK_CHARS / 4 * 3];
    let mut media_type = None;
    let chunks = encoded.len().div_ceil(VALIDATION_CHUNK_CHARS);
    for (index, chunk) in encoded.chunks(VALIDATION_CHUNK_CHARS).enumerate() {
        // Each chunk would accept padding at its own end; only the payload's end may have it.
        if index + 1 < chunks
            && let Some(at) = chunk.iter().position(|&byte| byte == b'=')
        {
            return Err(invalid_image(format!(
                "the image is not valid base64: padding at offset {} before the end",
                at + index * VALIDATION_CHUNK_CHARS
            )));
        }
        let written = STANDARD
            .decode_slice(chunk, &mut decoded)
            .map_err(|error| {
                let error = match error {
                    // Offsets relative to the whole payload, not to the chunk.
                    base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidByte(
                        offset,
                        byte,
                    )) => base64::DecodeError::InvalidByte(
                        offset + index * VALIDATION_CHUNK_CHARS,
                        byte,
                    )
                    .to_string(),
                    other => other.to_string(),
                };
                invalid_image(format!("the image is not valid base64: {error}"))
            })?;
        if index == 0 {
            media_type = sniff_media_type(&decoded[..written]);
        }
    }
    media_type.ok_or_else(|| invalid_image("the image is not a PNG, JPEG, GIF or WebP file".into()))
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
        assert_eq!(image_data_uri(&encoded).unwrap().as_str(), expected);
        // A wrong claimed type is corrected from the bytes.
        let claimed = format!("data:image/jpeg;base64,{encoded}");
        assert_eq!(image_data_uri(&claimed).unwrap().as_str(), expected);
    }

    #[test]
    fn images_longer_than_one_validation_chunk_round_trip() {
        // Sizes around the chunk boundary, each with every padding length.
        for size in [766, 767, 768, 769, 770, 5000, 5001, 5002] {
            let mut bytes = PNG_SIGNATURE.to_vec();
            bytes.resize(size, 7);
            let encoded = STANDARD.encode(&bytes);
            let uri = image_data_uri(&encoded).unwrap();
            assert_eq!(uri.as_str(), format!("data:image/png;base64,{encoded}"));
            // Nothing in it that JSON would escape.
            assert_eq!(
                serde_json::to_string(uri.as_str()).unwrap(),
                format!("\"{}\"", uri.as_str())
            );
        }
    }

    #[test]
    fn a_bad_byte_far_into_the_payload_is_reported_at_its_offset() {
        let mut encoded = STANDARD.encode([PNG_SIGNATURE, &[1u8; 3000]].concat());
        encoded.replace_range(2000..2001, "*");
        let Err(ReasonerError::Invalid { message, .. }) = image_data_uri(&encoded) else {
            panic!("accepted");
        };
        assert!(message.contains("offset 2000"), "{message}");
        // Padding in the middle is refused too, also where a validation chunk ends.
        for at in [1500, VALIDATION_CHUNK_CHARS - 4, VALIDATION_CHUNK_CHARS] {
            let mut encoded = STANDARD.encode([PNG_SIGNATURE, &[1u8; 3000]].concat());
            encoded.replace_range(at..at + 4, "AA==");
            assert!(image_data_uri(&encoded).is_err(), "padding at {at}");
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
        assert_eq!(image_data_uri(&wrapped).unwrap().as_str(), expected);
        assert_eq!(
            image_data_uri(&format!("data:image/png;base64,{wrapped}"))
                .unwrap()
                .as_str(),
            expected
        );
        assert!(image_data_uri(" \n ").is_err());
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            "",
            "!!!",
            "data:image/png,abc",
            &STANDARD.encode(b"hello world"),
        ] {
            assert!(image_data_uri(junk).is_err(), "{junk:?}");
        }
    }
}

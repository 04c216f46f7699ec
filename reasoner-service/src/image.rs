//! The query image: validated, then forwarded as a `data:` URI. It lives only in memory for
//! the turn; nothing here or downstream writes it to disk or to the database.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::ReasonerError;

/// Turns the request's image (bare base64 or a `data:image/...;base64,` URL) into a data URI
/// whose media type comes from the decoded bytes' signature, not from the client's claim.
pub fn image_data_uri(image: &str) -> Result<Arc<str>, ReasonerError> {
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
    // Line-wrapped base64 is accepted; the common unwrapped case is not copied twice.
    let compact: std::borrow::Cow<'_, str> = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        payload
            .chars()
            .filter(|character| !character.is_ascii_whitespace())
            .collect::<String>()
            .into()
    } else {
        payload.into()
    };
    if compact.is_empty() {
        return Err(invalid_image("the image is empty".into()));
    }
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|error| invalid_image(format!("the image is not valid base64: {error}")))?;
    let media_type = sniff_media_type(&bytes)
        .ok_or_else(|| invalid_image("the image is not a PNG, JPEG, GIF or WebP file".into()))?;
    Ok(format!("data:{media_type};base64,{compact}").into())
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
        assert_eq!(&*image_data_uri(&encoded).unwrap(), expected);
        // A wrong claimed type is corrected from the bytes.
        let claimed = format!("data:image/jpeg;base64,{encoded}");
        assert_eq!(&*image_data_uri(&claimed).unwrap(), expected);
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

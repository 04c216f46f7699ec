//! Turning client-supplied bytes into images safely: base64 / data URLs, format sniffing, a
//! pixel cap and the aspect-ratio cap checked from the header before any decoding
//! (decompression bombs, resize bombs), content hashes.

use std::io::Cursor;
use std::sync::Arc;

use base64::Engine as _;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, ImageReader, RgbImage};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A validated, decoded image together with the bytes it came from.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// The bytes as the client sent them (what the registry stores).
    pub bytes: Arc<Vec<u8>>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    /// Hex SHA-256 of `bytes`: the registry's content address and the vision cache's key.
    pub sha256: String,
    pub rgb: Arc<RgbImage>,
}

impl DecodedImage {
    /// The image as it may leave the edge, as a `data:` URL: the decoded pixels (orientation
    /// applied) encoded afresh, so no EXIF, XMP, GPS, ICC profile or comment of the original
    /// goes with it. Lossless sources stay lossless (PNG); photos are JPEG at quality 95.
    pub fn cloud_data_url(&self) -> Result<String, ApiError> {
        let mut encoded = Vec::new();
        let lossless = matches!(self.content_type, "image/png" | "image/gif" | "image/bmp");
        let written = if lossless {
            self.rgb
                .write_to(&mut Cursor::new(&mut encoded), ImageFormat::Png)
        } else {
            JpegEncoder::new_with_quality(&mut encoded, 95).encode_image(self.rgb.as_ref())
        };
        written.map_err(|error| ApiError::Internal(format!("re-encoding the image: {error}")))?;
        let content_type = if lossless { "image/png" } else { "image/jpeg" };
        Ok(format!(
            "data:{content_type};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&encoded)
        ))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_pixels: u64,
}

/// Decodes `data:image/...;base64,...` or bare base64. `what` names the field in errors.
pub fn decode_base64_image(
    input: &str,
    limits: ImageLimits,
    what: &str,
) -> Result<DecodedImage, ApiError> {
    let payload = strip_data_url(input, what)?;
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes()))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(compact.as_bytes()))
        .map_err(|error| ApiError::InvalidImage(format!("{what}: invalid base64 ({error})")))?;
    decode_image_bytes(bytes, limits, what)
}

fn strip_data_url<'a>(input: &'a str, what: &str) -> Result<&'a str, ApiError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(ApiError::InvalidImage(format!("{what}: empty image")));
    }
    let Some(rest) = trimmed.strip_prefix("data:") else {
        if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            return Err(ApiError::InvalidImage(format!(
                "{what}: remote image URLs are not fetched; send a data URL or base64"
            )));
        }
        return Ok(trimmed);
    };
    let (header, data) = rest.split_once(',').ok_or_else(|| {
        ApiError::InvalidImage(format!("{what}: a data URL needs a comma before its data"))
    })?;
    if !header.ends_with(";base64") {
        return Err(ApiError::InvalidImage(format!(
            "{what}: only base64 data URLs are accepted"
        )));
    }
    if !header.starts_with("image/") {
        return Err(ApiError::InvalidImage(format!(
            "{what}: the data URL's media type is not an image"
        )));
    }
    Ok(data)
}

/// Sniffs the format from the bytes (never trusting a declared type), checks the pixel count
/// from the header, and only then decodes, under `image::Limits` as a second fence.
pub fn decode_image_bytes(
    bytes: Vec<u8>,
    limits: ImageLimits,
    what: &str,
) -> Result<DecodedImage, ApiError> {
    let format = image::guess_format(&bytes)
        .map_err(|_| ApiError::InvalidImage(format!("{what}: the bytes are not an image")))?;
    let content_type = match format {
        ImageFormat::Png => "image/png",
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::WebP => "image/webp",
        ImageFormat::Gif => "image/gif",
        ImageFormat::Bmp => "image/bmp",
        other => {
            return Err(ApiError::InvalidImage(format!(
                "{what}: unsupported image format {other:?}"
            )));
        }
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes.as_slice()), format)
        .into_dimensions()
        .map_err(|error| ApiError::InvalidImage(format!("{what}: unreadable image ({error})")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ApiError::ImageTooLarge(format!(
            "{what}: {width}x{height} = {pixels} pixels exceeds the cap of {} pixels",
            limits.max_pixels
        )));
    }
    if pixels == 0 {
        return Err(ApiError::InvalidImage(format!(
            "{what}: the image is empty"
        )));
    }
    // From the header too: resizing a very thin image is what allocates, not decoding it.
    slc_engine::preprocess::check_aspect_ratio(width, height)
        .map_err(|error| ApiError::InvalidImage(format!("{what}: {error}")))?;
    // The engine's decoder, as transformers' `load_image` decodes: EXIF orientation applied
    // (so the small model sees the photo as the cloud and the user do) and Pillow's colour
    // conversion; bounded by the same pixel cap.
    let rgb = slc_engine::preprocess::decode_rgb(
        &bytes,
        slc_engine::preprocess::DecodeLimits {
            max_pixels: limits.max_pixels,
        },
    )
    .map_err(|error| ApiError::InvalidImage(format!("{what}: cannot decode ({error})")))?;
    let (width, height) = rgb.dimensions();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(DecodedImage {
        bytes: Arc::new(bytes),
        content_type,
        width,
        height,
        sha256,
        rgb: Arc::new(rgb),
    })
}

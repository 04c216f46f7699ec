//! Turning client-supplied bytes into images safely: base64 / data URLs, format sniffing, a
//! pixel cap and the aspect-ratio cap checked from the header before any decoding
//! (decompression bombs, resize bombs), content hashes.

use std::io::Cursor;
use std::sync::Arc;

use base64::Engine as _;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, ImageReader, RgbImage};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// This image's share of the decode budget, given back when the last clone is dropped.
    _reservation: Arc<OwnedSemaphorePermit>,
}

impl DecodedImage {
    /// The image as it may leave the edge, as a `data:` URL: the decoded pixels (orientation
    /// applied) encoded afresh, so no EXIF, XMP, GPS, ICC profile or comment of the original
    /// goes with it. Lossless sources stay lossless (PNG); photos are JPEG at quality 95.
    /// Encoding a photo takes about as long as decoding it, so it runs on a blocking thread.
    pub async fn cloud_data_url(&self) -> Result<String, ApiError> {
        let (rgb, content_type) = (self.rgb.clone(), self.content_type);
        tokio::task::spawn_blocking(move || encode_for_cloud(&rgb, content_type))
            .await
            .map_err(|error| ApiError::Internal(format!("the image encoder stopped: {error}")))?
    }
}

fn encode_for_cloud(rgb: &RgbImage, content_type: &str) -> Result<String, ApiError> {
    let mut encoded = Vec::new();
    let lossless = matches!(content_type, "image/png" | "image/gif" | "image/bmp");
    let written = if lossless {
        rgb.write_to(&mut Cursor::new(&mut encoded), ImageFormat::Png)
    } else {
        JpegEncoder::new_with_quality(&mut encoded, 95).encode_image(rgb)
    };
    written.map_err(|error| ApiError::Internal(format!("re-encoding the image: {error}")))?;
    let content_type = if lossless { "image/png" } else { "image/jpeg" };
    Ok(format!(
        "data:{content_type};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&encoded)
    ))
}

#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_pixels: u64,
}

/// Where client images come in: header checks first, then a share of one memory budget for
/// every decoded image alive at once, then the decode itself on a blocking thread (never on
/// the async runtime, where ten large photos would stall every other request, `/healthz`
/// included). Over the budget is 429 with `Retry-After`, at once: nothing waits holding memory.
#[derive(Debug, Clone)]
pub struct ImageIntake {
    pub limits: ImageLimits,
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

impl ImageIntake {
    pub fn new(limits: ImageLimits, budget_bytes: u64) -> Self {
        let budget_kib = u32::try_from(budget_bytes / 1024)
            .unwrap_or(u32::MAX)
            .max(1);
        ImageIntake {
            limits,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        }
    }

    /// `data:image/...;base64,...` or bare base64. `what` names the field in errors.
    pub async fn base64(&self, input: &str, what: &str) -> Result<DecodedImage, ApiError> {
        self.bytes(decode_payload(input, what)?, what).await
    }

    /// Raw image bytes (a multipart file).
    pub async fn bytes(&self, bytes: Vec<u8>, what: &str) -> Result<DecodedImage, ApiError> {
        let header = inspect(&bytes, self.limits, what)?;
        let reservation = self.reserve(&header, what)?;
        let (limits, what) = (self.limits, what.to_owned());
        tokio::task::spawn_blocking(move || decode(bytes, header, limits, &what, reservation))
            .await
            .map_err(|error| ApiError::Internal(format!("the image decoder stopped: {error}")))?
    }

    /// The decoded RGB buffer's size, twice over for the decoder's own working memory.
    fn reserve(&self, header: &Header, what: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        let bytes = u64::from(header.width) * u64::from(header.height) * 3 * 2;
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if kib > self.budget_kib {
            return Err(ApiError::ImageTooLarge(format!(
                "{what}: decoding {}x{} needs {} MiB, more than the decode budget of {} MiB",
                header.width,
                header.height,
                kib / 1024,
                self.budget_kib / 1024
            )));
        }
        self.budget
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| ApiError::Overloaded {
                retry_after_secs: 1,
            })
    }
}

/// What the header says, checked: format, size within the caps.
struct Header {
    content_type: &'static str,
    width: u32,
    height: u32,
}

/// The bytes of `data:image/...;base64,...` or bare base64 (standard, unpadded or URL-safe).
pub fn decode_payload(input: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    let payload = strip_data_url(input, what)?;
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes()))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(compact.as_bytes()))
        .map_err(|error| ApiError::InvalidImage(format!("{what}: invalid base64 ({error})")))
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

/// Sniffs the format from the bytes (never trusting a declared type) and checks the pixel
/// count and aspect ratio from the header, before anything is decoded.
fn inspect(bytes: &[u8], limits: ImageLimits, what: &str) -> Result<Header, ApiError> {
    let format = image::guess_format(bytes)
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
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
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
    Ok(Header {
        content_type,
        width,
        height,
    })
}

/// Decodes (blocking) with the engine's decoder, within the pixel cap.
fn decode(
    bytes: Vec<u8>,
    header: Header,
    limits: ImageLimits,
    what: &str,
    reservation: OwnedSemaphorePermit,
) -> Result<DecodedImage, ApiError> {
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
        content_type: header.content_type,
        width,
        height,
        sha256,
        rgb: Arc::new(rgb),
        _reservation: Arc::new(reservation),
    })
}

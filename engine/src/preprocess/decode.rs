//! Image bytes → 8-bit RGB, the way `transformers.image_utils.load_image` gets there:
//! `PIL.Image.open`, `PIL.ImageOps.exif_transpose`, then `Image.convert("RGB")`.
//!
//! The pixel cap is enforced from the header, before any pixel is decoded, and the decoder
//! also runs under `image::Limits` so a header that lies about its size cannot make it
//! allocate past the cap.
//!
//! JPEG pixels come from libjpeg-turbo's decoder (through the `mozjpeg` crate, same decoder
//! code, default ISLOW IDCT and fancy upsampling), because that is what Pillow links: other
//! decoders (zune-jpeg) differ from it by a level here and there, which breaks parity.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::PreprocessError;

/// Formats the engine accepts. Others (TIFF, AVIF, ...) are refused as unsupported rather
/// than decoded by a codec whose output we have not checked against Pillow.
const ACCEPTED_FORMATS: [ImageFormat; 5] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
];

/// Bytes per decoded pixel at most (RGBA 16-bit), used to size the allocation limit.
const MAX_DECODED_BYTES_PER_PIXEL: u64 = 8;

/// Guards applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest `width * height` of the stored image (before EXIF rotation) we agree to decode.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 64 megapixels: far above any photo a phone takes, far below what exhausts memory.
    fn default() -> Self {
        Self {
            max_pixels: 64 * 1024 * 1024,
        }
    }
}

fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, PreprocessError> {
    let format = image::guess_format(bytes).map_err(|_| {
        PreprocessError::UnsupportedImage("the bytes are not in a known image format".into())
    })?;
    if !ACCEPTED_FORMATS.contains(&format) {
        return Err(PreprocessError::UnsupportedImage(format!(
            "{format:?} images are not accepted (JPEG, PNG, WebP, GIF or BMP)"
        )));
    }
    Ok(format)
}

fn map_decode_error(error: image::ImageError) -> PreprocessError {
    match error {
        image::ImageError::Unsupported(e) => PreprocessError::UnsupportedImage(e.to_string()),
        image::ImageError::Limits(e) => PreprocessError::CorruptImage(format!(
            "the decoder needed more memory than the image's size allows: {e}"
        )),
        other => PreprocessError::CorruptImage(other.to_string()),
    }
}

/// Reads only the header and returns `(width, height)` as stored (before EXIF rotation).
pub fn image_dimensions(bytes: &[u8]) -> Result<(u32, u32), PreprocessError> {
    let format = sniff_format(bytes)?;
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    reader.into_dimensions().map_err(map_decode_error)
}

/// Decodes `bytes`, applies the EXIF orientation and converts to RGB like Pillow.
pub fn decode_rgb(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, PreprocessError> {
    let (width, height) = image_dimensions(bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(PreprocessError::ImageTooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(PreprocessError::CorruptImage(
            "the image header declares an empty image".into(),
        ));
    }

    let format = sniff_format(bytes)?;
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(width);
    decode_limits.max_image_height = Some(height);
    // The decoded frame plus the codec's own working buffers.
    decode_limits.max_alloc = Some(pixels * MAX_DECODED_BYTES_PER_PIXEL * 2 + (16 << 20));
    reader.limits(decode_limits);
    let mut decoder = reader.into_decoder().map_err(map_decode_error)?;
    // A missing or unreadable EXIF block means "no rotation", as in Pillow.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut decoded = if format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(decode_jpeg_like_libjpeg_turbo(bytes, width, height)?)
    } else {
        DynamicImage::from_decoder(decoder).map_err(map_decode_error)?
    };
    decoded.apply_orientation(orientation);
    convert_to_rgb_like_pillow(decoded)
}

/// Decodes a JPEG with libjpeg(-turbo)'s decoder into RGB (greyscale replicated, as
/// Pillow's `L` → `RGB`). libjpeg reports fatal errors by unwinding, caught here.
fn decode_jpeg_like_libjpeg_turbo(
    bytes: &[u8],
    width: u32,
    height: u32,
) -> Result<RgbImage, PreprocessError> {
    if !jpeg_has_end_of_image(bytes) {
        // libjpeg pads a truncated scan with grey and only warns; Pillow refuses the file
        // ("image file is truncated"), and so do we.
        return Err(PreprocessError::CorruptImage(
            "the JPEG data ends before its last scan is complete".into(),
        ));
    }
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let decompress = mozjpeg::Decompress::new_mem(bytes)?;
        if decompress.color_space() == mozjpeg::ColorSpace::JCS_CMYK
            || decompress.color_space() == mozjpeg::ColorSpace::JCS_YCCK
        {
            return Err(std::io::Error::other("CMYK JPEGs are not supported"));
        }
        let mut started = decompress.rgb()?;
        let (w, h) = (started.width(), started.height());
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok((w, h, pixels))
    }));
    let (w, h, pixels) = match decoded {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if e.to_string().contains("CMYK") => {
            return Err(PreprocessError::UnsupportedImage(e.to_string()));
        }
        Ok(Err(e)) => return Err(PreprocessError::CorruptImage(e.to_string())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg failed".into());
            return Err(PreprocessError::CorruptImage(message));
        }
    };
    if (w, h) != (width as usize, height as usize) || pixels.len() != w * h * 3 {
        return Err(PreprocessError::CorruptImage(format!(
            "the JPEG decoded to {w}x{h}, its header says {width}x{height}"
        )));
    }
    RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| PreprocessError::CorruptImage("short JPEG pixel data".into()))
}

/// Whether an end-of-image marker follows the last start-of-scan. Inside entropy-coded data
/// 0xFF is always followed by 0x00 or a restart marker, so `FF D9` after the last `FF DA`
/// can only be the real EOI (an EXIF thumbnail's markers all come before the main scan).
fn jpeg_has_end_of_image(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        None => false,
        Some(start) => bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]),
    }
}

/// `Image.convert("RGB")` for the layouts our decoders produce.
///
/// - grey (Pillow "L"/"LA"/"1") is replicated into the three channels, alpha dropped;
/// - RGBA (and palette images, which the decoders expand to RGB(A)) drops alpha: Pillow's
///   convert does not composite onto a background;
/// - 16-bit RGB(A) keeps the high byte, as Pillow's PNG reader does ("RGB;16B");
/// - 16-bit grey opens in Pillow as "I;16", whose RGB conversion clips at 255.
pub fn convert_to_rgb_like_pillow(image: DynamicImage) -> Result<RgbImage, PreprocessError> {
    let (width, height) = (image.width(), image.height());
    let from_fn = |f: &dyn Fn(u32, u32) -> [u8; 3]| {
        RgbImage::from_fn(width, height, |x, y| image::Rgb(f(x, y)))
    };
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(rgba) => from_fn(&|x, y| {
            let p = rgba.get_pixel(x, y).0;
            [p[0], p[1], p[2]]
        }),
        DynamicImage::ImageLuma8(luma) => from_fn(&|x, y| [luma.get_pixel(x, y).0[0]; 3]),
        DynamicImage::ImageLumaA8(luma) => from_fn(&|x, y| [luma.get_pixel(x, y).0[0]; 3]),
        DynamicImage::ImageRgb16(rgb) => from_fn(&|x, y| {
            let p = rgb.get_pixel(x, y).0;
            [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]
        }),
        DynamicImage::ImageRgba16(rgba) => from_fn(&|x, y| {
            let p = rgba.get_pixel(x, y).0;
            [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]
        }),
        DynamicImage::ImageLuma16(luma) => {
            from_fn(&|x, y| [luma.get_pixel(x, y).0[0].min(255) as u8; 3])
        }
        DynamicImage::ImageLumaA16(luma) => {
            from_fn(&|x, y| [(luma.get_pixel(x, y).0[0] >> 8) as u8; 3])
        }
        other => {
            return Err(PreprocessError::UnsupportedImage(format!(
                "pixel layout {:?} is not supported",
                other.color()
            )));
        }
    })
}

//! Image preprocessing, bit-for-bit with Hugging Face's slow image processors (which resize
//! through Pillow): decoding with EXIF orientation and Pillow's `convert("RGB")`, Pillow's
//! fixed-point bicubic resize, and the Qwen2-VL patch layout. Plain `Vec<f32>` out, no tch,
//! so the model code decides device and dtype.

pub mod base;
pub mod clip;
pub mod decode;
pub mod qwen2_vl;
pub mod resize;

pub use clip::{ClipImageProcessor, ClipImageProcessorConfig, ClipPixelValues};
pub use decode::{DecodeLimits, decode_rgb, image_dimensions};
pub use qwen2_vl::{
    PixelBudget, Qwen2VlImageInputs, Qwen2VlImageProcessor, Qwen2VlImageProcessorConfig,
    smart_resize,
};
pub use resize::resize_bicubic_like_pillow;

/// The largest long-to-short side ratio any image path accepts: Qwen2-VL's `smart_resize`
/// refuses more (`MAX_RATIO`), and a CLIP shortest-edge resize of a thinner image would
/// allocate `ratio × 224²` pixels (a 40,000,000×1 image asked for 25 GB).
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// `Err` when `width × height` is thinner than [`MAX_ASPECT_RATIO`] allows (or empty).
pub fn check_aspect_ratio(width: u32, height: u32) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::InvalidImageGeometry(
            "the image has a zero side".into(),
        ));
    }
    let ratio = f64::from(width.max(height)) / f64::from(width.min(height));
    if ratio > MAX_ASPECT_RATIO {
        return Err(PreprocessError::InvalidImageGeometry(format!(
            "absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio} ({width}x{height})"
        )));
    }
    Ok(())
}

/// Why an image could not be turned into model input. Callers map these to HTTP: the
/// image variants are the client's fault (4xx), `Config` is the server's (5xx).
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("unsupported image: {0}")]
    UnsupportedImage(String),
    #[error("corrupt or truncated image: {0}")]
    CorruptImage(String),
    #[error("image of {width}x{height} pixels is above the cap of {max_pixels} pixels")]
    ImageTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("invalid image geometry: {0}")]
    InvalidImageGeometry(String),
    #[error("invalid preprocessor config: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_images_are_refused_before_any_resize() {
        assert!(check_aspect_ratio(200, 1).is_ok());
        assert!(check_aspect_ratio(1, 200).is_ok());
        assert!(check_aspect_ratio(201, 1).is_err());
        assert!(check_aspect_ratio(40_000_000, 1).is_err());
        assert!(check_aspect_ratio(0, 5).is_err());
        let clip = ClipImageProcessor::new(ClipImageProcessorConfig::default()).unwrap();
        let thin = image::RgbImage::new(402, 2);
        assert!(matches!(
            clip.preprocess(&thin),
            Err(PreprocessError::InvalidImageGeometry(_))
        ));
        let wide = image::RgbImage::new(400, 2);
        assert_eq!(clip.preprocess(&wide).unwrap().height, 224);
    }
}

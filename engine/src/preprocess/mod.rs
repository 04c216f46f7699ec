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

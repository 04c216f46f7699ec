//! Qwen2-VL / Qwen2.5-VL image preprocessing, matching HF's slow `Qwen2VLImageProcessor`
//! (transformers 4.57.6 `src/transformers/models/qwen2_vl/image_processing_qwen2_vl.py`):
//! `smart_resize` → PIL bicubic resize → rescale (f64, then f32) → normalize (f32) →
//! temporal duplication → patch flattening in `(t, h/m, w/m, m, m, c, tp, p, p)` order.

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;

use super::PreprocessError;
use super::base::{BaseProcessorConfig, read_config};
use super::resize::resize_bicubic_like_pillow;

/// The fields of `preprocessor_config.json` this processor reads (HF defaults otherwise).
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2VlImageProcessorConfig {
    #[serde(default)]
    size: Option<SizeConfig>,
    #[serde(default)]
    min_pixels: Option<u64>,
    #[serde(default)]
    max_pixels: Option<u64>,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_temporal_patch_size")]
    pub temporal_patch_size: usize,
    #[serde(default = "default_merge_size")]
    pub merge_size: usize,
    #[serde(flatten)]
    pub base: BaseProcessorConfig,
}

#[derive(Debug, Clone, Deserialize)]
struct SizeConfig {
    shortest_edge: u64,
    longest_edge: u64,
}

fn default_patch_size() -> usize {
    14
}
fn default_temporal_patch_size() -> usize {
    2
}
fn default_merge_size() -> usize {
    2
}

/// HF's defaults when neither `size` nor `min_pixels`/`max_pixels` is configured.
const DEFAULT_MIN_PIXELS: u64 = 56 * 56;
const DEFAULT_MAX_PIXELS: u64 = 28 * 28 * 1280;

impl Default for Qwen2VlImageProcessorConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl Qwen2VlImageProcessorConfig {
    pub fn from_json_file(path: &Path) -> Result<Self, PreprocessError> {
        let config: Self = read_config(path)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), PreprocessError> {
        self.base.check_resample()?;
        if self.patch_size == 0 || self.merge_size == 0 || self.temporal_patch_size == 0 {
            return Err(PreprocessError::Config(
                "patch_size, merge_size and temporal_patch_size must be positive".into(),
            ));
        }
        Ok(())
    }

    /// `min_pixels` as HF's `__init__` resolves it: `size.shortest_edge`, overridden by a
    /// top-level `min_pixels`.
    pub fn min_pixels(&self) -> u64 {
        self.min_pixels
            .or(self.size.as_ref().map(|s| s.shortest_edge))
            .unwrap_or(DEFAULT_MIN_PIXELS)
    }

    /// `max_pixels` as HF's `__init__` resolves it (`size.longest_edge` or `max_pixels`).
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
            .or(self.size.as_ref().map(|s| s.longest_edge))
            .unwrap_or(DEFAULT_MAX_PIXELS)
    }

    /// `patch_size * merge_size`: both output sides are multiples of it (28 for Qwen2.5-VL).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one flattened patch row: `3 * temporal_patch_size * patch_size²` (1176).
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Per-request overrides of the processor's pixel budget (`images_kwargs` in HF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PixelBudget {
    pub min_pixels: Option<u64>,
    pub max_pixels: Option<u64>,
}

/// HF's `smart_resize`: the (height, width) closest to the input's aspect ratio with both
/// sides multiples of `factor` and `min_pixels <= h*w <= max_pixels`. Python's `round` is
/// round-half-to-even, hence `round_ties_even`.
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(usize, usize), PreprocessError> {
    super::check_aspect_ratio(width, height)?;
    let (h, w, f) = (f64::from(height), f64::from(width), factor as f64);
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// What the vision tower consumes: `pixel_values` `[num_patches, patch_dim]` row-major for
/// all images in prompt order, and one `(t, h, w)` grid in patches per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlImageInputs {
    pub pixel_values: Vec<f32>,
    pub patch_dim: usize,
    pub image_grid_thw: Vec<[usize; 3]>,
}

impl Qwen2VlImageInputs {
    pub fn num_patches(&self) -> usize {
        self.pixel_values.len() / self.patch_dim.max(1)
    }

    /// Number of `<|image_pad|>` tokens image `index` expands to: `t*h*w / merge_size²`.
    pub fn image_token_count(&self, index: usize, merge_size: usize) -> usize {
        let [t, h, w] = self.image_grid_thw[index];
        t * h * w / (merge_size * merge_size)
    }
}

/// The slow `Qwen2VLImageProcessor` on already-decoded RGB images.
#[derive(Debug, Clone, Default)]
pub struct Qwen2VlImageProcessor {
    pub config: Qwen2VlImageProcessorConfig,
}

impl Qwen2VlImageProcessor {
    pub fn new(config: Qwen2VlImageProcessorConfig) -> Result<Self, PreprocessError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// Reads `preprocessor_config.json` from a checkpoint directory.
    pub fn from_model_dir(dir: &Path) -> Result<Self, PreprocessError> {
        Self::new(Qwen2VlImageProcessorConfig::from_json_file(
            &dir.join("preprocessor_config.json"),
        )?)
    }

    /// The (height, width) an image of this size is resized to under `budget`.
    pub fn target_size(
        &self,
        height: u32,
        width: u32,
        budget: PixelBudget,
    ) -> Result<(usize, usize), PreprocessError> {
        let config = &self.config;
        if !config.base.do_resize {
            return Ok((height as usize, width as usize));
        }
        let min_pixels = budget.min_pixels.unwrap_or(config.min_pixels());
        let max_pixels = budget.max_pixels.unwrap_or(config.max_pixels());
        smart_resize(height, width, config.factor(), min_pixels, max_pixels)
    }

    /// Preprocesses images in prompt order into one `pixel_values` block.
    pub fn preprocess(
        &self,
        images: &[RgbImage],
        budget: PixelBudget,
    ) -> Result<Qwen2VlImageInputs, PreprocessError> {
        let patch_dim = self.config.patch_dim();
        let mut inputs = Qwen2VlImageInputs {
            pixel_values: Vec::new(),
            patch_dim,
            image_grid_thw: Vec::with_capacity(images.len()),
        };
        for image in images {
            let grid = self.preprocess_one(image, budget, &mut inputs.pixel_values)?;
            inputs.image_grid_thw.push(grid);
        }
        Ok(inputs)
    }

    /// Appends one image's patches to `out` and returns its grid.
    fn preprocess_one(
        &self,
        image: &RgbImage,
        budget: PixelBudget,
        out: &mut Vec<f32>,
    ) -> Result<[usize; 3], PreprocessError> {
        let config = &self.config;
        let (height, width) = self.target_size(image.height(), image.width(), budget)?;
        let (p, m, tp) = (
            config.patch_size,
            config.merge_size,
            config.temporal_patch_size,
        );
        if height % (p * m) != 0 || width % (p * m) != 0 {
            return Err(PreprocessError::InvalidImageGeometry(format!(
                "{width}x{height} is not a multiple of {} (set do_resize)",
                p * m
            )));
        }
        let resized = resize_bicubic_like_pillow(image, width as u32, height as u32);
        let planes = self.normalized_planes(&resized);

        // A single image is one frame, repeated to fill the temporal patch.
        let (grid_h, grid_w) = (height / p, width / p);
        out.reserve(grid_h * grid_w * config.patch_dim());
        for block_row in 0..grid_h / m {
            for block_col in 0..grid_w / m {
                for merge_row in 0..m {
                    for merge_col in 0..m {
                        let top = (block_row * m + merge_row) * p;
                        let left = (block_col * m + merge_col) * p;
                        for plane in &planes {
                            for _frame in 0..tp {
                                for y in top..top + p {
                                    out.extend_from_slice(&plane[y * width + left..][..p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok([1, grid_h, grid_w])
    }

    /// Channel-first f32 planes, rescaled and normalized (`BaseProcessorConfig::channel_tables`).
    fn normalized_planes(&self, image: &RgbImage) -> [Vec<f32>; 3] {
        let lookup = self.config.base.channel_tables();
        let pixels = image.width() as usize * image.height() as usize;
        let mut planes = [
            Vec::with_capacity(pixels),
            Vec::with_capacity(pixels),
            Vec::with_capacity(pixels),
        ];
        for pixel in image.pixels() {
            for c in 0..3 {
                planes[c].push(lookup[c][pixel.0[c] as usize]);
            }
        }
        planes
    }
}

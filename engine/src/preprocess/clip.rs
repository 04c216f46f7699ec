//! CLIP image preprocessing, matching HF's slow `CLIPImageProcessor`
//! (transformers 4.57.6 `src/transformers/models/clip/image_processing_clip.py`):
//! shortest-edge resize with PIL bicubic (`int(size * long / short)` for the long side),
//! centre crop (`(h - crop) // 2`, zero padding if the image is smaller), rescale (f64 then
//! f32), normalize (f32), channel-first.

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;

use super::PreprocessError;
use super::base::{BaseProcessorConfig, read_config};
use super::resize::resize_bicubic_like_pillow;

/// `size`/`crop_size` as configs write them: a dict or, in old configs, a bare int.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    ShortestEdge { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
    Square(u32),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipImageProcessorConfig {
    #[serde(default = "default_size")]
    size: SizeSpec,
    #[serde(default = "default_crop")]
    crop_size: SizeSpec,
    #[serde(default = "default_true")]
    pub do_center_crop: bool,
    #[serde(flatten)]
    pub base: BaseProcessorConfig,
}

fn default_size() -> SizeSpec {
    SizeSpec::ShortestEdge { shortest_edge: 224 }
}
fn default_crop() -> SizeSpec {
    SizeSpec::HeightWidth {
        height: 224,
        width: 224,
    }
}
fn default_true() -> bool {
    true
}

impl Default for ClipImageProcessorConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// HF's CLIP preprocessing on decoded RGB images.
#[derive(Debug, Clone, Default)]
pub struct ClipImageProcessor {
    pub config: ClipImageProcessorConfig,
}

/// One image as the CLIP vision tower takes it: `[3, height, width]`, channel-first.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPixelValues {
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl ClipImageProcessor {
    pub fn new(config: ClipImageProcessorConfig) -> Result<Self, PreprocessError> {
        config.base.check_resample()?;
        Ok(Self { config })
    }

    /// Reads `preprocessor_config.json` from a CLIP checkpoint directory.
    pub fn from_model_dir(dir: &Path) -> Result<Self, PreprocessError> {
        Self::new(read_config(&dir.join("preprocessor_config.json"))?)
    }

    /// (height, width) after the resize step, as `get_resize_output_image_size` computes it.
    pub fn resized_size(&self, height: u32, width: u32) -> (u32, u32) {
        match self.config.size {
            SizeSpec::ShortestEdge { shortest_edge } => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // Python: int(size * long / short), a true division then truncation.
                let new_long =
                    (f64::from(shortest_edge) * f64::from(long) / f64::from(short)) as u32;
                if width <= height {
                    (new_long, shortest_edge)
                } else {
                    (shortest_edge, new_long)
                }
            }
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::Square(size) => (size, size),
        }
    }

    fn crop_size(&self) -> (u32, u32) {
        match self.config.crop_size {
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::Square(size) => (size, size),
            SizeSpec::ShortestEdge { shortest_edge } => (shortest_edge, shortest_edge),
        }
    }

    pub fn preprocess(&self, image: &RgbImage) -> Result<ClipPixelValues, PreprocessError> {
        // Before the resize: its output grows with the aspect ratio.
        super::check_aspect_ratio(image.width(), image.height())?;
        let resized = if self.config.base.do_resize {
            let (h, w) = self.resized_size(image.height(), image.width());
            if h == 0 || w == 0 {
                return Err(PreprocessError::InvalidImageGeometry(format!(
                    "{}x{} resizes to an empty image",
                    image.width(),
                    image.height()
                )));
            }
            resize_bicubic_like_pillow(image, w, h)
        } else {
            image.clone()
        };
        let (height, width) = (resized.height() as i64, resized.width() as i64);
        let (out_h, out_w, top, left) = if self.config.do_center_crop {
            let (crop_h, crop_w) = self.crop_size();
            let (crop_h, crop_w) = (i64::from(crop_h), i64::from(crop_w));
            // Python floor division. When the image is smaller than the crop it is negative:
            // HF zero-pads by ceil(pad / 2) and shifts the window by the same amount, so
            // output pixel y still reads source row y + top, zero outside the image.
            let top = (height - crop_h).div_euclid(2);
            let left = (width - crop_w).div_euclid(2);
            (crop_h, crop_w, top, left)
        } else {
            (height, width, 0, 0)
        };

        let tables = self.config.base.channel_tables();
        let mut data = vec![0f32; 3 * (out_h * out_w) as usize];
        for (c, table) in tables.iter().enumerate() {
            let plane = &mut data[c * (out_h * out_w) as usize..][..(out_h * out_w) as usize];
            for y in 0..out_h {
                for x in 0..out_w {
                    let (sy, sx) = (y + top, x + left);
                    // Outside the image: HF pads the uint8 image with zeros before rescaling.
                    let v = if (0..height).contains(&sy) && (0..width).contains(&sx) {
                        resized.get_pixel(sx as u32, sy as u32).0[c]
                    } else {
                        0
                    };
                    plane[(y * out_w + x) as usize] = table[usize::from(v)];
                }
            }
        }
        Ok(ClipPixelValues {
            data,
            height: out_h as usize,
            width: out_w as usize,
        })
    }
}

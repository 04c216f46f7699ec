//! What the slow image processors here share, as transformers 4.57.6 shares it between
//! `CLIPImageProcessor` and `Qwen2VLImageProcessor`: the `do_resize` / `resample` /
//! `do_rescale` / `rescale_factor` / `do_normalize` / `image_mean` / `image_std` fields with
//! their defaults (OpenAI CLIP's mean and std for both), and the pixel arithmetic of
//! `src/transformers/image_transforms.py` `rescale` (f64, then cast to f32) followed by
//! `normalize` (f32).

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::PreprocessError;

/// PIL's `Image.BICUBIC`, the only resample filter we implement.
pub const PIL_BICUBIC: u32 = 3;

/// The fields of `preprocessor_config.json` both processors read; flattened into each
/// processor's config.
#[derive(Debug, Clone, Deserialize)]
pub struct BaseProcessorConfig {
    #[serde(default = "default_true")]
    pub do_resize: bool,
    #[serde(default = "default_resample")]
    pub resample: u32,
    #[serde(default = "default_true")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale_factor")]
    pub rescale_factor: f64,
    #[serde(default = "default_true")]
    pub do_normalize: bool,
    #[serde(default = "default_mean")]
    pub image_mean: [f64; 3],
    #[serde(default = "default_std")]
    pub image_std: [f64; 3],
}

fn default_true() -> bool {
    true
}
fn default_resample() -> u32 {
    PIL_BICUBIC
}
fn default_rescale_factor() -> f64 {
    1.0 / 255.0
}
fn default_mean() -> [f64; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn default_std() -> [f64; 3] {
    [0.26862954, 0.26130258, 0.27577711]
}

impl BaseProcessorConfig {
    /// Refuses a resample filter other than PIL bicubic: another one would silently give
    /// pixels that differ from the reference's.
    pub fn check_resample(&self) -> Result<(), PreprocessError> {
        if self.resample == PIL_BICUBIC {
            Ok(())
        } else {
            Err(PreprocessError::Config(format!(
                "resample {} is not supported (only PIL BICUBIC = {PIL_BICUBIC})",
                self.resample
            )))
        }
    }

    /// Per channel, the model input for every byte value: `(f32(v as f64 * rescale_factor) -
    /// mean) / std`, each step only where the config turns it on. A pixel's value depends on
    /// its byte alone, so a table of 256 entries per channel is the whole arithmetic.
    pub fn channel_tables(&self) -> [[f32; 256]; 3] {
        let mut tables = [[0f32; 256]; 3];
        for (c, table) in tables.iter_mut().enumerate() {
            let (mean, std) = (self.image_mean[c] as f32, self.image_std[c] as f32);
            for (value, entry) in table.iter_mut().enumerate() {
                let mut x = if self.do_rescale {
                    (value as f64 * self.rescale_factor) as f32
                } else {
                    value as f32
                };
                if self.do_normalize {
                    x = (x - mean) / std;
                }
                *entry = x;
            }
        }
        tables
    }
}

/// A `preprocessor_config.json`, read as `T`; errors name the file.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T, PreprocessError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PreprocessError::Config(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| PreprocessError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{ClipImageProcessor, ClipImageProcessorConfig};
    use crate::preprocess::{Qwen2VlImageProcessor, Qwen2VlImageProcessorConfig};

    /// The shared fields are read through each processor's config (flattened), not defaulted.
    #[test]
    fn both_processors_read_the_shared_fields_and_refuse_other_filters() {
        let json = r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1],
                       "rescale_factor": 0.5, "do_resize": false}"#;
        let clip: ClipImageProcessorConfig = serde_json::from_str(json).unwrap();
        let qwen: Qwen2VlImageProcessorConfig = serde_json::from_str(json).unwrap();
        for base in [&clip.base, &qwen.base] {
            assert!(!base.do_resize && base.do_rescale && base.do_normalize);
            let tables = base.channel_tables();
            // (4 * 0.5 - 0.5) / std per channel.
            assert_eq!([tables[0][4], tables[1][4], tables[2][4]], [6.0, 3.0, 1.5]);
        }
        let unscaled: BaseProcessorConfig =
            serde_json::from_str(r#"{"do_rescale": false, "do_normalize": false}"#).unwrap();
        assert_eq!(unscaled.channel_tables()[1][200], 200.0);

        let bilinear = r#"{"resample": 2}"#;
        let clip: ClipImageProcessorConfig = serde_json::from_str(bilinear).unwrap();
        assert!(ClipImageProcessor::new(clip).is_err());
        let qwen: Qwen2VlImageProcessorConfig = serde_json::from_str(bilinear).unwrap();
        assert!(Qwen2VlImageProcessor::new(qwen).is_err());
    }
}

//! Merged vision embeddings by image content and preprocessing bounds, per worker: a turn sends
//! the same query image to the model several times, and it goes through the vision tower once.

use crate::lru::ByteLru;
use crate::pipeline::EncodedImage;
use std::rc::Rc;

/// What makes two encodings of an image the same: its content, the processor's pixel bounds
/// (they decide the resize) and, when the active adapter changes the vision tower, that adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VisionKey {
    pub(super) content_id: String,
    pub(super) min_pixels: u64,
    pub(super) max_pixels: u64,
    /// The canonical name of the active adapter, set only when it changes the vision tower.
    pub(super) adapter: Option<String>,
}

/// Bounded by the bytes of the embeddings (`EncodedImage::size_bytes`).
pub(super) type VisionCache = ByteLru<VisionKey, Rc<EncodedImage>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(rows: i64) -> Rc<EncodedImage> {
        Rc::new(EncodedImage {
            embeds: tch::Tensor::zeros([rows, 4], (tch::Kind::Float, tch::Device::Cpu)),
            grid: [1, 2, 2],
            tokens: rows as usize,
        })
    }

    fn key(name: &str) -> VisionKey {
        VisionKey {
            content_id: name.into(),
            min_pixels: 1,
            max_pixels: 2,
            adapter: None,
        }
    }

    #[test]
    fn bounds_and_a_vision_adapter_are_part_of_the_key() {
        // Each entry is rows * 4 floats * 4 bytes = 16 bytes per row.
        let image = encoded(1);
        assert_eq!(image.size_bytes(), 16);
        let mut cache = VisionCache::new(3 * 16);
        cache.insert(key("a"), image.clone(), image.size_bytes());
        assert!(cache.get(&key("a")).is_some());
        let other_bounds = VisionKey {
            max_pixels: 3,
            ..key("a")
        };
        assert!(
            cache.get(&other_bounds).is_none(),
            "bounds are part of the key"
        );
        let other_adapter = VisionKey {
            adapter: Some("bo".into()),
            ..key("a")
        };
        assert!(cache.get(&other_adapter).is_none());
    }
}

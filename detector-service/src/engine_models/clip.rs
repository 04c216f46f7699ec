//! [`ConceptEmbedder`] on the engine's tch CLIP encoder.

use slc_engine::meta_train::embed::ClipImageEmbedder;

use super::failed;
use crate::model::{ConceptEmbedder, ModelError, PromptImage};

pub(super) struct EngineClip(pub(super) ClipImageEmbedder);

impl ConceptEmbedder for EngineClip {
    fn clip_model_name(&self) -> String {
        self.0.id.name.clone()
    }

    fn embed_images(&mut self, images: &[PromptImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        images
            .iter()
            .map(|image| {
                let pixels = self
                    .0
                    .processor
                    .preprocess(&image.rgb)
                    .map_err(|e| ModelError::InvalidRequest(e.to_string()))?;
                self.0.model.embed_pixels(&pixels).map_err(failed)
            })
            .collect()
    }
}

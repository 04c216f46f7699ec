//! Image embeddings for personalization: the seam to the CLIP image encoder, the concept
//! embeddings meta-training clusters, and the `embed` smoke tool's report (embeddings plus
//! pairwise cosines of a few images, as JSON).

use crate::clip::ClipVisionModelWithProjection;
use crate::error::{EngineError, Result};
use crate::lora::bank::ClipModelId;
use crate::lora::selection::{concept_embedding, cosine_similarity};
use crate::preprocess::{ClipImageProcessor, DecodeLimits, decode_rgb};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Something that turns image files into CLIP image embeddings (`image_embeds` of HF's
/// `CLIPVisionModelWithProjection`). The tch CLIP encoder implements it; meta-training and the
/// detector only see this trait.
pub trait ImageEmbedder {
    /// Which model makes the embeddings (recorded in and checked against bank dictionaries).
    fn clip_model(&self) -> ClipModelId;
    /// One embedding per image, in order.
    fn embed_image_files(&self, images: &[PathBuf]) -> Result<Vec<Vec<f32>>>;
}

/// The tch CLIP image encoder with HF's `CLIPImageProcessor`, loaded from a CLIP checkpoint
/// directory as published (`openai/clip-vit-large-patch14` and the like).
pub struct ClipImageEmbedder {
    pub model: ClipVisionModelWithProjection,
    pub processor: ClipImageProcessor,
    pub id: ClipModelId,
}

impl ClipImageEmbedder {
    pub fn load(dir: &Path, device: tch::Device) -> Result<Self> {
        let processor = ClipImageProcessor::from_model_dir(dir)
            .map_err(|e| EngineError::Config(format!("CLIP preprocessor: {e}")))?;
        Ok(ClipImageEmbedder {
            model: ClipVisionModelWithProjection::load(dir, tch::Kind::Float, device)?,
            processor,
            id: ClipModelId::from_clip_dir(dir)?,
        })
    }
}

impl ImageEmbedder for ClipImageEmbedder {
    fn clip_model(&self) -> ClipModelId {
        self.id.clone()
    }

    fn embed_image_files(&self, images: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
        images
            .iter()
            .map(|path| {
                let bad = |e: &dyn std::fmt::Display| {
                    EngineError::InvalidInput(format!("{}: {e}", path.display()))
                };
                let bytes = std::fs::read(path).map_err(|e| bad(&e))?;
                let image = decode_rgb(&bytes, DecodeLimits::default()).map_err(|e| bad(&e))?;
                let pixels = self.processor.preprocess(&image).map_err(|e| bad(&e))?;
                self.model.embed_pixels(&pixels)
            })
            .collect()
    }
}

/// A concept's embedding from its reference images (mean of L2-normalised embeddings).
pub fn embed_concept(
    embedder: &dyn ImageEmbedder,
    reference_images: &[PathBuf],
) -> Result<Vec<f32>> {
    concept_embedding(&embedder.embed_image_files(reference_images)?)
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedImage {
    pub path: String,
    pub embedding: Vec<f32>,
}

/// What `slc-detector embed --clip DIR IMAGE...` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    pub clip_model: ClipModelId,
    pub images: Vec<EmbeddedImage>,
    /// `cosines[i][j]`: cosine similarity of images i and j.
    pub cosines: Vec<Vec<f32>>,
}

/// Embeds `images` and computes their pairwise cosine similarities.
pub fn embed_report(embedder: &dyn ImageEmbedder, images: &[PathBuf]) -> Result<EmbedReport> {
    let embeddings = embedder.embed_image_files(images)?;
    let cosines = embeddings
        .iter()
        .map(|a| embeddings.iter().map(|b| cosine_similarity(a, b)).collect())
        .collect();
    Ok(EmbedReport {
        clip_model: embedder.clip_model(),
        images: images
            .iter()
            .zip(embeddings)
            .map(|(path, embedding)| EmbeddedImage {
                path: display(path),
                embedding,
            })
            .collect(),
        cosines,
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

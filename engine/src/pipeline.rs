//! A loaded Qwen2.5-VL checkpoint with everything needed to go from a chat and image bytes to a
//! completion: the model, its tokenizer and chat template, its image processor and its eos ids.
//! What `slc-detector generate` runs, and what `crate::serving::ServingModel` wraps for the
//! edge service's workers. Mirrors transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/processing_qwen2_5_vl.py` `Qwen2_5_VLProcessor` +
//! `Qwen2_5_VLForConditionalGeneration.generate`.

use crate::chat::{ChatMessage, ChatTemplateOptions, encode_chat};
use crate::constrain::{Constraint, ConstraintVocabulary};
use crate::error::{EngineError, Result};
use crate::generation::{
    Decoding, GenerationInput, GenerationOutput, SamplingParams, TokenConstraint, generate,
};
use crate::preprocess::{DecodeLimits, PixelBudget, Qwen2VlImageProcessor, decode_rgb};
use crate::qwen2_5_vl::{KvCache, LoadOptions, Qwen25VlModel, eos_token_ids};
use crate::tokenizer::QwenTokenizer;
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::Tensor;

/// A prompt ready for the model: ids with image pads expanded, and the images' pixel values.
pub struct PreparedPrompt {
    pub input_ids: Vec<i64>,
    /// [patches, patch_dim] f32 on CPU, all images in prompt order.
    pub pixel_values: Option<Tensor>,
    pub grids: Vec<[i64; 3]>,
}

/// One image through the vision tower: what a vision-encoder cache keeps.
pub struct EncodedImage {
    /// Merged embeddings [tokens, hidden] on the model's device.
    pub embeds: Tensor,
    pub grid: [i64; 3],
    /// `<|image_pad|>` tokens the image takes in the prompt.
    pub tokens: usize,
}

impl EncodedImage {
    /// Bytes the embeddings occupy, for a cache bounded by bytes.
    pub fn size_bytes(&self) -> usize {
        self.embeds.numel() * self.embeds.kind().elt_size_in_bytes()
    }
}

pub struct VlmPipeline {
    pub model: Qwen25VlModel,
    pub tokenizer: QwenTokenizer,
    pub processor: Qwen2VlImageProcessor,
    pub eos_token_ids: Vec<i64>,
    pub model_dir: PathBuf,
    /// Built on first use: it walks the whole vocabulary once.
    constraint_vocabulary: OnceLock<ConstraintVocabulary>,
}

impl VlmPipeline {
    pub fn load(dir: &Path, options: LoadOptions) -> Result<Self> {
        let model = Qwen25VlModel::load(dir, options)?;
        let tokenizer = QwenTokenizer::from_model_dir(dir)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let special = tokenizer.special_tokens();
        if i64::from(special.image_pad) != model.config.image_token_id
            || i64::from(special.vision_start) != model.config.vision_start_token_id
        {
            return Err(EngineError::Config(format!(
                "tokenizer's <|image_pad|>/<|vision_start|> ({}, {}) differ from config.json ({}, {})",
                special.image_pad,
                special.vision_start,
                model.config.image_token_id,
                model.config.vision_start_token_id
            )));
        }
        Ok(VlmPipeline {
            processor: Qwen2VlImageProcessor::from_model_dir(dir)?,
            eos_token_ids: eos_token_ids(dir)?,
            model,
            tokenizer,
            model_dir: dir.to_path_buf(),
            constraint_vocabulary: OnceLock::new(),
        })
    }

    /// Decodes and preprocesses the images (in prompt order) and renders the chat to ids.
    pub fn prepare(
        &self,
        messages: &[ChatMessage],
        images: &[&[u8]],
        limits: DecodeLimits,
        budget: PixelBudget,
    ) -> Result<PreparedPrompt> {
        let decoded = images
            .iter()
            .map(|bytes| decode_rgb(bytes, limits))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let merge = self.model.config.vision.spatial_merge_size as usize;
        let (pixel_values, grids, counts) = if decoded.is_empty() {
            (None, Vec::new(), Vec::new())
        } else {
            let inputs = self.processor.preprocess(&decoded, budget)?;
            let counts: Vec<usize> = (0..inputs.image_grid_thw.len())
                .map(|i| inputs.image_token_count(i, merge))
                .collect();
            let grids: Vec<[i64; 3]> = inputs
                .image_grid_thw
                .iter()
                .map(|g| [g[0] as i64, g[1] as i64, g[2] as i64])
                .collect();
            let pixels = Tensor::from_slice(&inputs.pixel_values)
                .view([inputs.num_patches() as i64, inputs.patch_dim as i64]);
            (Some(pixels), grids, counts)
        };
        Ok(PreparedPrompt {
            input_ids: self.render(messages, &counts)?,
            pixel_values,
            grids,
        })
    }

    /// Renders the chat with the model's template; `image_tokens[i]` pads the i-th image.
    pub fn render(&self, messages: &[ChatMessage], image_tokens: &[usize]) -> Result<Vec<i64>> {
        let options = ChatTemplateOptions {
            add_generation_prompt: true,
            add_vision_id: false,
        };
        let ids =
            encode_chat(&self.tokenizer, messages, options, image_tokens).map_err(|e| match e {
                crate::chat::ChatError::ImageCountMismatch { .. } => {
                    EngineError::InvalidInput(e.to_string())
                }
                other => EngineError::Tokenizer(other.to_string()),
            })?;
        Ok(ids.into_iter().map(i64::from).collect())
    }

    /// Preprocesses one decoded image and runs the vision tower on it. Images are encoded
    /// independently (the tower's attention never crosses images), so per-image results can
    /// be cached and concatenated.
    pub fn encode_image(&self, image: &RgbImage, budget: PixelBudget) -> Result<EncodedImage> {
        let inputs = self
            .processor
            .preprocess(std::slice::from_ref(image), budget)?;
        let merge = self.model.config.vision.spatial_merge_size as usize;
        let g = inputs.image_grid_thw[0];
        let grid = [g[0] as i64, g[1] as i64, g[2] as i64];
        let pixels = Tensor::from_slice(&inputs.pixel_values)
            .view([inputs.num_patches() as i64, inputs.patch_dim as i64]);
        Ok(EncodedImage {
            embeds: self.model.encode_images(&pixels, &[grid])?,
            grid,
            tokens: inputs.image_token_count(0, merge),
        })
    }

    /// Generates from rendered ids and already encoded images (in prompt order). `cache` is a
    /// fresh `model.new_cache()` or a reused prefix of this prompt (`crate::prefix_cache`); it
    /// holds the prompt and the generated tokens after.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_encoded<'a>(
        &'a self,
        input_ids: &[i64],
        images: &[&EncodedImage],
        params: &SamplingParams,
        constraint: Option<&'a mut dyn TokenConstraint>,
        on_text: Option<&'a mut dyn FnMut(&str) -> bool>,
        cache: &mut KvCache,
    ) -> Result<GenerationOutput> {
        let embeds = (!images.is_empty())
            .then(|| Tensor::cat(&images.iter().map(|i| &i.embeds).collect::<Vec<_>>(), 0));
        let grids: Vec<[i64; 3]> = images.iter().map(|i| i.grid).collect();
        let input = GenerationInput {
            input_ids,
            pixel_values: None,
            image_embeds: embeds.as_ref(),
            grids: &grids,
        };
        self.run(&input, params, constraint, on_text, cache)
    }

    /// The constraint vocabulary of this checkpoint, built once.
    pub fn constraint_vocabulary(&self) -> Result<&ConstraintVocabulary> {
        if let Some(vocabulary) = self.constraint_vocabulary.get() {
            return Ok(vocabulary);
        }
        let vocabulary =
            ConstraintVocabulary::new(&self.tokenizer, self.model.config.text.vocab_size as usize)
                .map_err(|e| EngineError::Constraint(e.to_string()))?;
        Ok(self.constraint_vocabulary.get_or_init(|| vocabulary))
    }

    /// A JSON-schema constraint over this checkpoint's tokenizer and logits.
    pub fn json_schema_constraint(&self, schema: &serde_json::Value) -> Result<Constraint> {
        Constraint::json_schema(self.constraint_vocabulary()?, schema)
            .map_err(|e| EngineError::InvalidInput(e.to_string()))
    }

    /// Generates from a prepared prompt. `params.stop_token_ids` empty means the checkpoint's eos.
    pub fn generate<'a>(
        &'a self,
        prompt: &PreparedPrompt,
        params: &SamplingParams,
        constraint: Option<&'a mut dyn TokenConstraint>,
    ) -> Result<GenerationOutput> {
        let input = GenerationInput {
            input_ids: &prompt.input_ids,
            pixel_values: prompt.pixel_values.as_ref(),
            image_embeds: None,
            grids: &prompt.grids,
        };
        self.run(
            &input,
            params,
            constraint,
            None,
            &mut self.model.new_cache(),
        )
    }

    fn run<'a>(
        &'a self,
        input: &GenerationInput,
        params: &SamplingParams,
        constraint: Option<&'a mut dyn TokenConstraint>,
        on_text: Option<&'a mut dyn FnMut(&str) -> bool>,
        cache: &mut KvCache,
    ) -> Result<GenerationOutput> {
        let mut params = params.clone();
        if params.stop_token_ids.is_empty() {
            params.stop_token_ids = self.eos_token_ids.clone();
        }
        let decoding = Decoding {
            detokenizer: Some(&self.tokenizer),
            constraint,
            on_text,
        };
        generate(&self.model, input, &params, decoding, cache)
    }
}

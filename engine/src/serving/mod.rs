//! What one worker of the edge service owns: a loaded [`VlmPipeline`], the adapters it switches
//! between per request ([`ActiveAdapter`]), and two caches that let a turn's repeated calls
//! (detection, then the reasoner's verification and answer when the edge is the large model)
//! share work: the vision-encoder cache (the query image goes through the vision tower once)
//! and prefix KV reuse (a repeated prefix, such as a fixed system prompt, is prefilled once).
//! Each worker loads its own copy, so there are no locks.

mod vision_cache;

use crate::chat::{ChatMessage, ContentPart};
use crate::error::Result;
use crate::generation::{GenerationOutput, SamplingParams, TokenConstraint};
use crate::lora::{ActiveAdapter, AdapterMix};
use crate::pipeline::{EncodedImage, VlmPipeline};
use crate::prefix_cache::{PrefixCache, prompt_keys};
use crate::preprocess::PixelBudget;
use image::RgbImage;
use std::rc::Rc;
use std::time::Instant;
use vision_cache::{VisionCache, VisionKey};

/// The caches' bounds in bytes; 0 turns a cache off.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheBounds {
    pub vision_bytes: usize,
    pub prefix_bytes: usize,
}

/// One image of a prompt. `content_id` identifies its content (the client's bytes' SHA-256),
/// so the caches need not hash pixels.
pub struct ServedImage<'a> {
    pub content_id: &'a str,
    pub rgb: &'a RgbImage,
}

pub struct ServedRequest<'a> {
    pub messages: &'a [ChatMessage],
    /// One per `ContentPart::Image` of `messages`, in order.
    pub images: &'a [ServedImage<'a>],
    pub params: &'a SamplingParams,
    /// Constrains the output to a JSON document valid under this schema.
    pub json_schema: Option<&'a serde_json::Value>,
    /// A bank adapter or top-K mix (`a+b`); `None` runs the weights as loaded.
    pub adapter: Option<&'a str>,
}

#[derive(Debug)]
pub struct ServedOutput {
    pub generation: GenerationOutput,
    /// From the call's start until the images were encoded (adapter switch included).
    pub vision_ms: f64,
    /// Images run through the vision tower for this request.
    pub vision_encodes: usize,
    /// Images whose embeddings came from the vision-encoder cache.
    pub vision_cache_hits: usize,
}

pub struct ServingModel {
    pub pipeline: VlmPipeline,
    adapters: ActiveAdapter,
    vision_cache: VisionCache,
    prefix_cache: PrefixCache,
}

impl ServingModel {
    pub fn new(pipeline: VlmPipeline, adapters: ActiveAdapter, bounds: CacheBounds) -> Self {
        ServingModel {
            pipeline,
            adapters,
            vision_cache: VisionCache::new(bounds.vision_bytes),
            prefix_cache: PrefixCache::new(bounds.prefix_bytes),
        }
    }

    /// The adapter names a request may use alone (mixes join them with `+`).
    pub fn adapter_names(&self) -> Vec<String> {
        self.adapters.names()
    }

    /// Builds the grammar vocabulary (a walk over the whole tokenizer) and runs one constrained
    /// token, so the first request pays neither. The bank warmed each adapter when it loaded.
    pub fn warm_up(&mut self) -> Result<()> {
        let messages = [ChatMessage::user(vec![ContentPart::Text("ok".into())])];
        let params = SamplingParams {
            max_new_tokens: 1,
            ..SamplingParams::default()
        };
        let schema = serde_json::json!({"type": "boolean"});
        let request = ServedRequest {
            messages: &messages,
            images: &[],
            params: &params,
            json_schema: Some(&schema),
            adapter: None,
        };
        self.generate(&request, None).map(|_| ())
    }

    /// Runs one request: its adapter into the LoRA slots (the name validated before any tensor
    /// work), its images through the vision cache, its prompt after the longest reusable
    /// prefix. `on_text` is as in [`crate::generation::Decoding`].
    pub fn generate(
        &mut self,
        request: &ServedRequest,
        on_text: Option<&mut dyn FnMut(&str) -> bool>,
    ) -> Result<ServedOutput> {
        let started = Instant::now();
        self.adapters
            .select(&mut self.pipeline.model, request.adapter)?;
        let (mut vision_encodes, mut vision_cache_hits) = (0, 0);
        let mut images = Vec::with_capacity(request.images.len());
        for image in request.images {
            let (encoded, hit) = self.encode(image)?;
            if hit {
                vision_cache_hits += 1;
            } else {
                vision_encodes += 1;
            }
            images.push(encoded);
        }
        let vision_ms = started.elapsed().as_secs_f64() * 1000.0;
        let tokens: Vec<usize> = images.iter().map(|image| image.tokens).collect();
        let input_ids = self.pipeline.render(request.messages, &tokens)?;
        let mut constraint = request
            .json_schema
            .map(|schema| self.pipeline.json_schema_constraint(schema))
            .transpose()?;
        // The adapter in the LoRA slots changes every key and value: prefixes are per adapter.
        let namespace = self
            .adapters
            .attached()
            .map(AdapterMix::name)
            .unwrap_or_default();
        let image_ids: Vec<&str> = request.images.iter().map(|i| i.content_id).collect();
        let image_token = self.pipeline.model.config.image_token_id;
        let keys = prompt_keys(&input_ids, image_token, &image_ids);
        let mut cache = match self.prefix_cache.lookup(&namespace, &keys) {
            Some(hit) => hit.cache,
            None => self.pipeline.model.new_cache(),
        };
        let image_refs: Vec<&EncodedImage> = images.iter().map(Rc::as_ref).collect();
        let generation = self.pipeline.generate_encoded(
            &input_ids,
            &image_refs,
            request.params,
            constraint.as_mut().map(|c| c as &mut dyn TokenConstraint),
            // A reborrow for this call only: the pipeline ties its collaborators to one lifetime.
            on_text.map(|f| f as &mut dyn FnMut(&str) -> bool),
            &mut cache,
        )?;
        self.prefix_cache.insert(&namespace, keys, &cache);
        Ok(ServedOutput {
            generation,
            vision_ms,
            vision_encodes,
            vision_cache_hits,
        })
    }

    /// The embeddings of one image, and whether they came from the cache.
    fn encode(&mut self, image: &ServedImage) -> Result<(Rc<EncodedImage>, bool)> {
        let processor = &self.pipeline.processor.config;
        let key = VisionKey {
            content_id: image.content_id.to_string(),
            min_pixels: processor.min_pixels(),
            max_pixels: processor.max_pixels(),
            adapter: self
                .adapters
                .attached()
                .filter(|_| self.adapters.attached_changes_vision())
                .map(AdapterMix::name),
        };
        if let Some(hit) = self.vision_cache.get(&key) {
            return Ok((hit.clone(), true));
        }
        let encoded = Rc::new(
            self.pipeline
                .encode_image(image.rgb, PixelBudget::default())?,
        );
        let bytes = encoded.size_bytes();
        self.vision_cache.insert(key, encoded.clone(), bytes);
        Ok((encoded, false))
    }
}

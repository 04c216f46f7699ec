//! The real models behind the seams of [`crate::model`]: Qwen2.5-VL through `slc-engine`'s
//! [`VlmPipeline`] with the meta-concept adapter bank applied unmerged (switched per request),
//! and the tch CLIP encoder for concept embeddings. Each worker thread loads its own copy.
//!
//! The vision-encoder and prefix KV caches live here because a turn sends the same query image
//! and the same fixed system prompts to the model several times (detection, then the
//! reasoner's verification and answer calls when the edge is the large model): the image goes
//! through the vision tower once per worker, and a repeated prefix is prefilled once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use slc_engine::chat::{ChatMessage, ContentPart as EngineContent};
use slc_engine::error::EngineError;
use slc_engine::generation::{
    FinishReason as EngineFinish, SamplingParams as EngineSampling, TokenConstraint,
};
use slc_engine::lora::{AdapterBank, BankDictionary, LoraAdapter, attach_adapter};
use slc_engine::lora::{detach_adapters, merge_adapter};
use slc_engine::meta_train::embed::ClipImageEmbedder;
use slc_engine::pipeline::{EncodedImage, VlmPipeline};
use slc_engine::prefix_cache::{PrefixCache, prompt_keys};
use slc_engine::preprocess::PixelBudget;
use slc_engine::qwen2_5_vl::LoadOptions;

use crate::embedding::{CosineAdapterChooser, adapter_members};
use crate::model::{
    ConceptEmbedder, ContentPart, EdgeModels, FinishReason, GenerationOutput, GenerationRequest,
    GenerationTimings, GenerationUsage, ModelError, ModelLoader, PromptImage, Role, TokenControl,
    VisionLanguageModel,
};

/// What every worker loads.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub model_dir: PathBuf,
    pub clip_dir: PathBuf,
    pub adapter_bank: Option<PathBuf>,
    /// Fold the bank's only adapter into the weights instead of applying it per request.
    pub merge_adapter: bool,
    pub device: String,
    pub dtype: String,
    /// Bound of the vision-encoder cache per worker; 0 turns it off.
    pub vision_cache_bytes: usize,
    /// Bound of the prefix KV cache per worker; 0 turns reuse off.
    pub prefix_cache_bytes: usize,
    /// Feed schema-forced runs of tokens in one forward pass (off: one pass per token).
    pub jump_forward: bool,
}

pub struct EngineLoader {
    pub options: EngineOptions,
}

impl ModelLoader for EngineLoader {
    fn load(&self) -> Result<EdgeModels, ModelError> {
        let options = &self.options;
        let load = LoadOptions::parse(&options.device, Some(&options.dtype)).map_err(failed)?;
        let embedder = ClipImageEmbedder::load(&options.clip_dir, load.device)
            .map_err(|e| context(&options.clip_dir, e))?;
        let mut pipeline = VlmPipeline::load(&options.model_dir, load)
            .map_err(|e| context(&options.model_dir, e))?;
        let mut adapters = Vec::new();
        if let Some(bank_dir) = &options.adapter_bank {
            let bank = AdapterBank::load(bank_dir, &mut pipeline.model, &embedder.id)
                .map_err(|e| context(bank_dir, e))?;
            adapters = bank
                .meta_concepts
                .into_iter()
                .map(|meta| (meta.name, meta.adapter))
                .collect();
        }
        let vision_adapters = adapters
            .iter()
            .filter(|(_, adapter)| {
                adapter
                    .modules
                    .keys()
                    .any(|path| path.starts_with("model.visual."))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut merged = None;
        if options.merge_adapter {
            let [(name, adapter)] =
                <[_; 1]>::try_from(std::mem::take(&mut adapters)).map_err(|_| {
                    ModelError::Failed("merging needs a bank with exactly one adapter".into())
                })?;
            merge_adapter(&mut pipeline.model, &adapter);
            merged = Some(name);
        }
        let base_name = options
            .model_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "qwen2.5-vl".into());
        Ok(EdgeModels {
            vlm: Box::new(EngineVlm {
                pipeline,
                base_name,
                adapters,
                merged,
                attached: None,
                vision_adapters,
                mixes: HashMap::new(),
                vision_cache: VisionCache::new(options.vision_cache_bytes),
                prefix_cache: PrefixCache::new(options.prefix_cache_bytes),
                jump_forward: options.jump_forward,
            }),
            embedder: Box::new(EngineClip(embedder)),
        })
    }
}

/// The chooser over the bank's dictionary (paper Eq. 1, top-`top_k`), read without loading
/// weights so the HTTP layer has it before the workers finish loading.
pub fn bank_chooser(bank_dir: &Path, top_k: usize) -> Result<CosineAdapterChooser, EngineError> {
    let dictionary = BankDictionary::read(bank_dir)?;
    let embeddings = dictionary.embeddings(bank_dir)?;
    Ok(CosineAdapterChooser {
        top_k,
        meta_concepts: dictionary
            .meta_concepts
            .iter()
            .map(|entry| entry.name.clone())
            .zip(embeddings)
            .collect(),
    })
}

fn failed(error: EngineError) -> ModelError {
    if error.is_client_error() {
        ModelError::InvalidRequest(error.to_string())
    } else {
        ModelError::Failed(error.to_string())
    }
}

fn context(path: &Path, error: EngineError) -> ModelError {
    ModelError::Failed(format!("{}: {error}", path.display()))
}

struct EngineVlm {
    pipeline: VlmPipeline,
    base_name: String,
    adapters: Vec<(String, LoraAdapter)>,
    /// The adapter folded into the weights, if the deployment merged one.
    merged: Option<String>,
    /// The adapter whose factors sit in the model's LoRA slots now.
    attached: Option<String>,
    /// Adapters that change the vision tower, so its output is cached per adapter.
    vision_adapters: Vec<String>,
    /// Top-K mixes (averaged factors) built so far, by their `a+b` name.
    mixes: HashMap<String, LoraAdapter>,
    vision_cache: VisionCache,
    prefix_cache: PrefixCache,
    jump_forward: bool,
}

impl EngineVlm {
    /// Puts the request's adapter in the LoRA slots (a pointer swap per layer).
    fn select_adapter(&mut self, name: Option<&str>) -> Result<(), ModelError> {
        let name = name.filter(|name| Some(*name) != self.merged.as_deref());
        if name == self.attached.as_deref() {
            return Ok(());
        }
        match name {
            None => detach_adapters(&mut self.pipeline.model),
            Some(name) => {
                let members = adapter_members(name);
                let found = members
                    .iter()
                    .map(|member| {
                        self.adapters
                            .iter()
                            .find(|(candidate, _)| candidate == member)
                            .map(|(_, adapter)| adapter)
                            .ok_or_else(|| ModelError::UnknownAdapter(name.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if found.len() == 1 {
                    attach_adapter(&mut self.pipeline.model, found[0]);
                } else {
                    if !self.mixes.contains_key(name) {
                        // A handful of turns' mixes; a new set of concepts rarely repeats.
                        if self.mixes.len() >= 16 {
                            self.mixes.clear();
                        }
                        let mix = LoraAdapter::average(&found).map_err(failed)?;
                        self.mixes.insert(name.to_string(), mix);
                    }
                    attach_adapter(&mut self.pipeline.model, &self.mixes[name]);
                }
            }
        }
        self.attached = name.map(str::to_string);
        Ok(())
    }

    /// The embeddings of one image, from the cache when this worker has seen it.
    fn encode(
        &mut self,
        image: &PromptImage,
        usage: &mut GenerationUsage,
    ) -> Result<Rc<EncodedImage>, ModelError> {
        let processor = &self.pipeline.processor.config;
        let key = VisionKey {
            sha256: image.sha256.clone(),
            min_pixels: processor.min_pixels(),
            max_pixels: processor.max_pixels(),
            adapter: self.attached.clone().filter(|name| {
                adapter_members(name)
                    .iter()
                    .any(|member| self.vision_adapters.iter().any(|v| v == member))
            }),
        };
        if let Some(hit) = self.vision_cache.get(&key) {
            usage.vision_cache_hits += 1;
            return Ok(hit);
        }
        let encoded = Rc::new(
            self.pipeline
                .encode_image(&image.rgb, PixelBudget::default())
                .map_err(failed)?,
        );
        usage.vision_encodes += 1;
        self.vision_cache.insert(key, encoded.clone());
        Ok(encoded)
    }
}

impl VisionLanguageModel for EngineVlm {
    fn base_model_name(&self) -> String {
        self.base_name.clone()
    }

    fn adapter_names(&self) -> Vec<String> {
        self.adapters
            .iter()
            .map(|(name, _)| name.clone())
            .chain(self.merged.clone())
            .collect()
    }

    /// Builds the grammar vocabulary (a walk over the whole tokenizer) and runs one constrained
    /// token, so the first request pays neither. The bank warmed each adapter when it loaded.
    fn warm_up(&mut self) -> Result<(), ModelError> {
        let request = GenerationRequest {
            messages: vec![crate::model::PromptMessage {
                role: Role::User,
                content: vec![ContentPart::Text("ok".into())],
            }],
            sampling: crate::model::SamplingParams::greedy(1),
            json_schema: Some(serde_json::json!({"type": "boolean"})),
            adapter: None,
        };
        self.generate(&request, &mut |_| TokenControl::Continue)
            .map(|_| ())
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<GenerationOutput, ModelError> {
        let started = Instant::now();
        self.select_adapter(request.adapter.as_deref())?;
        let mut usage = GenerationUsage::default();
        let mut messages = Vec::with_capacity(request.messages.len());
        let mut images = Vec::new();
        let mut image_ids = Vec::new();
        for message in &request.messages {
            let mut content = Vec::with_capacity(message.content.len());
            for part in &message.content {
                match part {
                    ContentPart::Text(text) => content.push(EngineContent::Text(text.clone())),
                    ContentPart::Image(image) => {
                        images.push(self.encode(image, &mut usage)?);
                        image_ids.push(image.sha256.as_str());
                        content.push(EngineContent::Image);
                    }
                }
            }
            let role = match message.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(ChatMessage::new(role, content));
        }
        let vision_ms = started.elapsed().as_secs_f64() * 1000.0;
        let tokens: Vec<usize> = images.iter().map(|image| image.tokens).collect();
        let input_ids = self.pipeline.render(&messages, &tokens).map_err(failed)?;
        let mut constraint = match &request.json_schema {
            Some(schema) => Some(
                self.pipeline
                    .json_schema_constraint(schema)
                    .map_err(failed)?,
            ),
            None => None,
        };
        let sampling = &request.sampling;
        let params = EngineSampling {
            max_new_tokens: sampling.max_new_tokens as usize,
            temperature: f64::from(sampling.temperature),
            top_p: f64::from(sampling.top_p),
            top_k: 0,
            seed: sampling.seed.unwrap_or(0),
            stop_token_ids: Vec::new(),
            stop_strings: sampling.stop.clone(),
        };
        let image_refs: Vec<&EncodedImage> = images.iter().map(Rc::as_ref).collect();
        let mut forward = |piece: &str| on_text(piece) == TokenControl::Continue;
        // The adapter in the LoRA slots changes every key and value: prefixes are per adapter.
        let namespace = self.attached.clone().unwrap_or_default();
        let keys = prompt_keys(
            &input_ids,
            self.pipeline.model.config.image_token_id,
            &image_ids,
        );
        let mut cache = match self.prefix_cache.lookup(&namespace, &keys) {
            Some(hit) => hit.cache,
            None => self.pipeline.model.new_cache(),
        };
        let mut without_jumps;
        let constraint: Option<&mut dyn TokenConstraint> = match constraint.as_mut() {
            Some(inner) if !self.jump_forward => {
                without_jumps = NoJumpForward { inner };
                Some(&mut without_jumps)
            }
            Some(inner) => Some(inner),
            None => None,
        };
        let output = self
            .pipeline
            .generate_encoded(
                &input_ids,
                &image_refs,
                &params,
                constraint,
                Some(&mut forward),
                &mut cache,
            )
            .map_err(failed)?;
        self.prefix_cache.insert(&namespace, keys, &cache);
        usage.prompt_tokens = output.usage.prompt_tokens as u64;
        usage.prefill_tokens =
            (output.usage.prompt_tokens - output.usage.reused_prompt_tokens) as u64;
        usage.completion_tokens = output.usage.completion_tokens as u64;
        usage.decode_steps = output.usage.decode_steps as u64;
        Ok(GenerationOutput {
            text: output.text,
            token_ids: output.token_ids.iter().map(|&id| id as u32).collect(),
            finish_reason: match output.finish_reason {
                EngineFinish::Stop => FinishReason::Stop,
                EngineFinish::Length => FinishReason::Length,
                EngineFinish::Cancelled => FinishReason::Cancelled,
            },
            usage,
            timings: GenerationTimings {
                vision_ms,
                prefill_ms: output.timings.prefill_ms,
                decode_ms: output.timings.decode_ms,
                time_to_first_token_ms: vision_ms + output.timings.first_token_ms,
            },
        })
    }
}

/// The grammar without its forced runs: every token is decoded one forward pass at a time,
/// as in the authors' pipeline (the naive configuration of the turn benchmark).
struct NoJumpForward<'a> {
    inner: &'a mut slc_engine::constrain::Constraint,
}

impl TokenConstraint for NoJumpForward<'_> {
    fn forced_tokens(&mut self) -> slc_engine::Result<Vec<u32>> {
        Ok(Vec::new())
    }
    fn allowed_tokens(&mut self) -> slc_engine::Result<Vec<u32>> {
        TokenConstraint::allowed_tokens(self.inner)
    }
    fn consume(&mut self, tokens: &[u32], forced: bool) -> slc_engine::Result<()> {
        TokenConstraint::consume(self.inner, tokens, forced)
    }
    fn is_finished(&self) -> bool {
        TokenConstraint::is_finished(self.inner)
    }
}

struct EngineClip(ClipImageEmbedder);

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct VisionKey {
    sha256: String,
    min_pixels: u64,
    max_pixels: u64,
    /// Set when the active adapter changes the vision tower.
    adapter: Option<String>,
}

/// Merged vision embeddings by image content and preprocessing bounds, bounded by bytes,
/// least recently used first out. Per worker, so no locks.
struct VisionCache {
    capacity_bytes: usize,
    used_bytes: usize,
    clock: u64,
    entries: HashMap<VisionKey, (Rc<EncodedImage>, u64)>,
}

impl VisionCache {
    fn new(capacity_bytes: usize) -> Self {
        VisionCache {
            capacity_bytes,
            used_bytes: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, key: &VisionKey) -> Option<Rc<EncodedImage>> {
        self.clock += 1;
        let (encoded, last_used) = self.entries.get_mut(key)?;
        *last_used = self.clock;
        Some(encoded.clone())
    }

    fn insert(&mut self, key: VisionKey, encoded: Rc<EncodedImage>) {
        let size = encoded.size_bytes();
        if size > self.capacity_bytes {
            return;
        }
        while self.used_bytes + size > self.capacity_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((evicted, _)) = self.entries.remove(&oldest) {
                self.used_bytes -= evicted.size_bytes();
            }
        }
        self.clock += 1;
        self.used_bytes += size;
        if let Some((replaced, _)) = self.entries.insert(key, (encoded, self.clock)) {
            self.used_bytes -= replaced.size_bytes();
        }
    }
}

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
            sha256: name.into(),
            min_pixels: 1,
            max_pixels: 2,
            adapter: None,
        }
    }

    #[test]
    fn vision_cache_evicts_least_recently_used_within_its_byte_bound() {
        // Each entry is rows * 4 floats * 4 bytes = 16 bytes per row.
        let mut cache = VisionCache::new(3 * 16);
        cache.insert(key("a"), encoded(1));
        cache.insert(key("b"), encoded(1));
        cache.insert(key("c"), encoded(1));
        assert!(cache.get(&key("a")).is_some(), "a becomes the most recent");
        cache.insert(key("d"), encoded(1));
        assert!(
            cache.get(&key("b")).is_none(),
            "b was the least recently used"
        );
        assert!(cache.get(&key("a")).is_some());
        assert!(cache.get(&key("c")).is_some());
        assert!(cache.get(&key("d")).is_some());
        assert_eq!(cache.used_bytes, 3 * 16);
        cache.insert(key("big"), encoded(4));
        assert!(
            cache.get(&key("big")).is_none(),
            "larger than the whole cache"
        );
        let mut off = VisionCache::new(0);
        off.insert(key("a"), encoded(1));
        assert!(
            off.get(&key("a")).is_none(),
            "a zero bound turns the cache off"
        );
        let other_bounds = VisionKey {
            max_pixels: 3,
            ..key("a")
        };
        assert!(
            cache.get(&other_bounds).is_none(),
            "bounds are part of the key"
        );
    }
}

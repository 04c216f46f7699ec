//! The seam between the HTTP layer and the models: small traits that the real tch engine
//! (crate `slc-engine`) implements, and that tests can implement where the engine cannot run.
//!
//! The models are owned by worker threads (`tch::Tensor` is `Send` but not `Sync`), so the
//! model traits take `&mut self` and need not be `Send`: each worker builds its own copy
//! through a [`ModelLoader`] on its own thread.

use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// An image inside a prompt. `sha256` is the content hash of the client's bytes, so the
/// engine can key its vision-encoder cache on it without hashing pixels again.
#[derive(Debug, Clone)]
pub struct PromptImage {
    pub sha256: String,
    pub rgb: Arc<RgbImage>,
}

#[derive(Debug, Clone)]
pub enum ContentPart {
    Text(String),
    Image(PromptImage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone)]
pub struct PromptMessage {
    pub role: Role,
    pub content: Vec<ContentPart>,
}

impl PromptMessage {
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text(text) => Some(text.as_str()),
                ContentPart::Image(_) => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_new_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    /// Generation ends before any of these strings; they are not part of the text.
    pub stop: Vec<String>,
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: u32) -> Self {
        SamplingParams {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Chat messages, rendered by the engine with the model's chat template.
    pub messages: Vec<PromptMessage>,
    pub sampling: SamplingParams,
    /// When set, decoding is constrained so that the output is a JSON document valid under
    /// this schema, and runs of schema-forced tokens are fed in one step (jump-forward).
    pub json_schema: Option<serde_json::Value>,
    /// The LoRA adapter to apply for this request (by its bank name); `None` = base model.
    pub adapter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-turn token, or the JSON document closed.
    Stop,
    /// A stop string matched.
    StopSequence,
    /// `max_new_tokens` reached.
    Length,
    /// The caller's token callback asked to stop (client gone or deadline).
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Forward passes during decoding; below `completion_tokens` when jump-forward fed several
    /// forced tokens in one pass.
    pub decode_steps: u64,
    /// Prompt tokens actually run through the model (below `prompt_tokens` when a cached
    /// prefix was reused).
    pub prefill_tokens: u64,
    /// Images run through the vision tower for this request.
    pub vision_encodes: u64,
    /// Images whose embeddings came from the vision-encoder cache.
    pub vision_cache_hits: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationTimings {
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// From the start of the call to the first generated token.
    pub time_to_first_token_ms: f64,
}

#[derive(Debug, Clone)]
pub struct GenerationOutput {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub usage: GenerationUsage,
    pub timings: GenerationTimings,
}

/// What a token callback tells the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenControl {
    Continue,
    Stop,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("unknown adapter {0:?}")]
    UnknownAdapter(String),
    /// The request cannot run on this model (a schema the grammar engine rejects, a prompt
    /// longer than the context): the client's mistake, not the model's.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Failed(String),
}

/// The small VLM (Qwen2.5-VL + LoRA adapter bank in the real engine).
pub trait VisionLanguageModel {
    /// The name clients use for the base model in `/v1/chat/completions` (`model` field).
    fn base_model_name(&self) -> String;
    /// Names of the loaded adapters, usable as `model` names too.
    fn adapter_names(&self) -> Vec<String>;
    /// Runs every adapter once so that the first request pays no warm-up cost.
    fn warm_up(&mut self) -> Result<(), ModelError>;
    /// Generates a completion. `on_text` receives each newly decoded piece of text in order
    /// (their concatenation is `text`) and can stop generation early.
    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<GenerationOutput, ModelError>;
    /// How the model resizes an image before it sees it; grounding boxes come in the resized
    /// image's pixels. `None`: the model cannot ground.
    fn resize_rule(&self) -> Option<ResizeRule> {
        None
    }
}

/// Qwen2.5-VL's `smart_resize` inputs: both sides a multiple of `factor`, the area within
/// `[min_pixels, max_pixels]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeRule {
    pub factor: usize,
    pub min_pixels: u64,
    pub max_pixels: u64,
}

/// CLIP image embeddings of reference images (paper Eq. 1 starts from these).
pub trait ConceptEmbedder {
    /// Identifies the CLIP model, so that embeddings and the adapter dictionary can be checked
    /// to come from the same one.
    fn clip_model_name(&self) -> String;
    /// One embedding per image, in order, as the CLIP projection outputs it.
    fn embed_images(&mut self, images: &[PromptImage]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// Both models a worker owns.
pub struct EdgeModels {
    pub vlm: Box<dyn VisionLanguageModel>,
    pub embedder: Box<dyn ConceptEmbedder>,
}

/// Builds the models on the worker thread that will own them; `worker` is that thread's index
/// (the engine puts worker i on GPU i when there are several).
pub trait ModelLoader: Send + Sync {
    fn load(&self, worker: usize) -> Result<EdgeModels, ModelError>;
}

/// The adapter chosen for a turn and how similar its meta-concept is to the turn's concepts.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSelection {
    pub name: String,
    pub similarity: f32,
}

/// Chooses the meta-concept adapter for a turn from its scenario embedding (paper Eq. 1).
pub trait AdapterChooser: Send + Sync {
    fn choose(&self, scenario_embedding: &[f32]) -> Option<AdapterSelection>;
}

//! [`VisionLanguageModel`] on the engine's [`ServingModel`]: the seam's request, sampling
//! settings and output translated to and from the engine's types.

use slc_engine::chat::{ChatMessage, ContentPart as EngineContent};
use slc_engine::error::EngineError;
use slc_engine::generation::{FinishReason as EngineFinish, SamplingParams as EngineSampling};
use slc_engine::lora::AdapterNameError;
use slc_engine::serving::{ServedImage, ServedOutput, ServedRequest, ServingModel};

use super::failed;
use crate::model::{
    ContentPart, FinishReason, GenerationOutput, GenerationRequest, GenerationTimings,
    GenerationUsage, ModelError, PromptMessage, Role, SamplingParams, TokenControl,
    VisionLanguageModel,
};

pub(super) struct EngineVlm {
    pub(super) model: ServingModel,
    pub(super) base_name: String,
    /// The deployment's jump-forward switch, put into every request's decoding settings.
    pub(super) jump_forward: bool,
    /// See `EngineOptions::fail_on_prompt`.
    pub(super) fail_on_prompt: Option<String>,
}

impl VisionLanguageModel for EngineVlm {
    fn base_model_name(&self) -> String {
        self.base_name.clone()
    }

    fn adapter_names(&self) -> Vec<String> {
        self.model.adapter_names()
    }

    fn warm_up(&mut self) -> Result<(), ModelError> {
        self.model.warm_up().map_err(failed)
    }

    fn resize_rule(&self) -> Option<crate::model::ResizeRule> {
        // Serving encodes every image under the processor's own budget (`PixelBudget::default()`).
        let config = &self.model.pipeline.processor.config;
        Some(crate::model::ResizeRule {
            factor: config.factor(),
            min_pixels: config.min_pixels(),
            max_pixels: config.max_pixels(),
        })
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<GenerationOutput, ModelError> {
        if let Some(marker) = &self.fail_on_prompt
            && request
                .messages
                .iter()
                .any(|message| message.text().contains(marker.as_str()))
        {
            // A real libtorch error: tch panics with libtorch's message.
            let _ = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu)).matmul(
                &tch::Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu)),
            );
        }
        let messages: Vec<ChatMessage> = request.messages.iter().map(engine_message).collect();
        let images: Vec<ServedImage> = request
            .messages
            .iter()
            .flat_map(|message| &message.content)
            .filter_map(|part| match part {
                ContentPart::Image(image) => Some(ServedImage {
                    content_id: &image.sha256,
                    rgb: &image.rgb,
                }),
                ContentPart::Text(_) => None,
            })
            .collect();
        let params = engine_sampling(&request.sampling, self.jump_forward);
        let served = ServedRequest {
            messages: &messages,
            images: &images,
            params: &params,
            json_schema: request.json_schema.as_ref(),
            adapter: request.adapter.as_deref(),
        };
        let mut forward = |piece: &str| on_text(piece) == TokenControl::Continue;
        let output =
            self.model
                .generate(&served, Some(&mut forward))
                .map_err(|error| match error {
                    EngineError::AdapterName(AdapterNameError::Unknown { .. }) => {
                        ModelError::UnknownAdapter(request.adapter.clone().unwrap_or_default())
                    }
                    other => failed(other),
                })?;
        Ok(seam_output(output))
    }
}

fn engine_message(message: &PromptMessage) -> ChatMessage {
    let content = message
        .content
        .iter()
        .map(|part| match part {
            ContentPart::Text(text) => EngineContent::Text(text.clone()),
            ContentPart::Image(_) => EngineContent::Image,
        })
        .collect();
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    ChatMessage::new(role, content)
}

fn engine_sampling(sampling: &SamplingParams, jump_forward: bool) -> EngineSampling {
    EngineSampling {
        max_new_tokens: sampling.max_new_tokens as usize,
        temperature: f64::from(sampling.temperature),
        top_p: f64::from(sampling.top_p),
        top_k: 0,
        seed: sampling.seed.unwrap_or(0),
        // Empty: the checkpoint's eos ids.
        stop_token_ids: Vec::new(),
        stop_strings: sampling.stop.clone(),
        jump_forward,
    }
}

fn seam_output(output: ServedOutput) -> GenerationOutput {
    let ServedOutput {
        generation,
        vision_ms,
        vision_encodes,
        vision_cache_hits,
    } = output;
    let usage = &generation.usage;
    GenerationOutput {
        token_ids: generation.token_ids.iter().map(|&id| id as u32).collect(),
        finish_reason: match generation.finish_reason {
            EngineFinish::Stop => FinishReason::Stop,
            EngineFinish::Length => FinishReason::Length,
            EngineFinish::Cancelled => FinishReason::Cancelled,
        },
        usage: GenerationUsage {
            prompt_tokens: usage.prompt_tokens as u64,
            completion_tokens: usage.completion_tokens as u64,
            decode_steps: usage.decode_steps as u64,
            prefill_tokens: (usage.prompt_tokens - usage.reused_prompt_tokens) as u64,
            vision_encodes: vision_encodes as u64,
            vision_cache_hits: vision_cache_hits as u64,
        },
        timings: GenerationTimings {
            vision_ms,
            prefill_ms: generation.timings.prefill_ms,
            decode_ms: generation.timings.decode_ms,
            time_to_first_token_ms: vision_ms + generation.timings.first_token_ms,
        },
        text: generation.text,
    }
}

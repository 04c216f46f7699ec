//! Generation: prefill, then a small decoder (`decoder.rs`) that repeats three steps, the next
//! run of tokens (sampled, `sampling.rs`, plus forced by the grammar: jump-forward), the stop
//! checks (eos ids, stop strings, the grammar's end, `max_new_tokens`) and emitting final text
//! (`text_stream.rs`), with timings of each phase. Mirrors what transformers 4.57.6
//! `src/transformers/generation/utils.py` `GenerationMixin.generate` does for batch size 1 with
//! a dynamic KV cache.

mod decoder;
mod sampling;
mod text_stream;

use crate::error::{EngineError, Result};
use crate::qwen2_5_vl::{KvCache, Qwen25VlModel};
use decoder::Decoder;
use std::time::Instant;
use tch::{Kind, Tensor};

/// Turns generated ids back into text (the tokenizer implements it).
pub trait Detokenize {
    fn decode(&self, ids: &[u32]) -> String;
}

/// A grammar that restricts the next token, as llguidance's `Matcher` does.
pub trait TokenConstraint {
    /// Tokens the grammar forces from the current state (possibly none). Jump-forward feeds them
    /// to the model in one step instead of decoding them one at a time.
    fn forced_tokens(&mut self) -> Result<Vec<u32>>;
    /// Bitset over the vocabulary (bit `i % 32` of word `i / 32`) of the tokens allowed next.
    fn allowed_tokens(&mut self) -> Result<Vec<u32>>;
    /// Advances the grammar over tokens that were emitted; `forced` marks a jump-forward run.
    fn consume(&mut self, tokens: &[u32], forced: bool) -> Result<()>;
    /// Whether the grammar has reached a state where generation must end.
    fn is_finished(&self) -> bool;
}

#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// 1.0 disables nucleus filtering.
    pub top_p: f64,
    /// 0 disables top-k filtering.
    pub top_k: usize,
    pub seed: u64,
    /// Ids that end generation (from `generation_config.json`); they are kept in `token_ids`.
    pub stop_token_ids: Vec<i64>,
    /// Strings that end generation; the text is cut before the first one.
    pub stop_strings: Vec<String>,
    /// Feed the runs of tokens a grammar forces in one forward pass (jump-forward). Off, every
    /// token is decoded one pass at a time, as in the SLC authors' pipeline; the output is the
    /// same either way.
    pub jump_forward: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            jump_forward: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An eos id, a stop string, or the grammar's end.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The text callback asked to stop (client gone, deadline).
    Cancelled,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Forward passes after the prefill; below `completion_tokens` when jump-forward fed runs.
    pub decode_steps: usize,
    /// Prompt positions that came from a reused KV prefix instead of the prefill.
    pub reused_prompt_tokens: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub vision_encode_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// From the start of the call until the first generated token was chosen.
    pub first_token_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct GenerationOutput {
    pub text: String,
    pub token_ids: Vec<i64>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
    /// f32 logits [vocab] of the first generated position, before any mask or warper.
    #[serde(skip)]
    pub first_logits: Option<Tensor>,
}

/// What to run: prompt ids and the images, as pixel values or as cached embeddings.
pub struct GenerationInput<'a> {
    pub input_ids: &'a [i64],
    pub pixel_values: Option<&'a Tensor>,
    /// Merged embeddings from `encode_images`; used instead of `pixel_values` when given.
    pub image_embeds: Option<&'a Tensor>,
    pub grids: &'a [[i64; 3]],
}

/// The optional collaborators of one generation.
#[derive(Default)]
pub struct Decoding<'a> {
    /// Needed for text output, stop strings and `on_text`.
    pub detokenizer: Option<&'a dyn Detokenize>,
    /// Restricts every token to a grammar, with jump-forward over its forced runs.
    pub constraint: Option<&'a mut dyn TokenConstraint>,
    /// Receives each new piece of text once it is final (never a piece a stop string may still
    /// cut, never half a UTF-8 character); the pieces concatenate to the output's `text`.
    /// Returning `false` stops generation with [`FinishReason::Cancelled`].
    pub on_text: Option<&'a mut dyn FnMut(&str) -> bool>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Runs one request to completion. `cache` is empty, or holds a prefix of this very prompt
/// (prefix reuse: only the rest is prefilled); it holds the whole sequence after.
pub fn generate(
    model: &Qwen25VlModel,
    input: &GenerationInput,
    params: &SamplingParams,
    decoding: Decoding,
    cache: &mut KvCache,
) -> Result<GenerationOutput> {
    let prompt_tokens = input.input_ids.len();
    if prompt_tokens + params.max_new_tokens > model.context_length() {
        return Err(EngineError::PromptTooLong {
            prompt_tokens,
            max_new_tokens: params.max_new_tokens,
            context: model.context_length(),
        });
    }
    let started = Instant::now();
    let mut timings = Timings::default();
    let reused_prompt_tokens = cache.len as usize;
    let (mut last_logits, first_logits) = run_prompt(model, input, cache, &mut timings, started)?;

    let decode_started = Instant::now();
    let mut decoder = Decoder::new(params, decoding, started);
    let mut decode_steps = 0usize;
    let finish_reason = loop {
        if decoder.generated().len() >= params.max_new_tokens {
            break FinishReason::Length;
        }
        let run = decoder.next_run(&last_logits)?;
        if let Some(reason) = decoder.append_checked(&run) {
            break reason;
        }
        if !decoder.emit() {
            break FinishReason::Cancelled;
        }
        if decoder.generated().len() >= params.max_new_tokens {
            break FinishReason::Length;
        }
        let hidden = model.forward_tokens(&run, cache)?;
        decode_steps += 1;
        last_logits = model.logits(&hidden.get(-1));
    };
    timings.decode_ms = ms(decode_started);
    timings.first_token_ms = decoder.first_token_ms;
    let (text, token_ids) = decoder.finish(finish_reason);
    Ok(GenerationOutput {
        text,
        usage: Usage {
            prompt_tokens,
            completion_tokens: token_ids.len(),
            decode_steps,
            reused_prompt_tokens,
        },
        token_ids,
        finish_reason,
        timings,
        first_logits: Some(first_logits.to_kind(Kind::Float)),
    })
}

/// Encodes the images if they come as pixel values and prefills the prompt into `cache`.
/// Returns the logits of its last position, on the model's device and copied to the CPU.
fn run_prompt(
    model: &Qwen25VlModel,
    input: &GenerationInput,
    cache: &mut KvCache,
    timings: &mut Timings,
    started: Instant,
) -> Result<(Tensor, Tensor)> {
    let encoded;
    let image_embeds = match (input.image_embeds, input.pixel_values) {
        (Some(embeds), _) => Some(embeds),
        (None, Some(pixels)) => {
            encoded = model.encode_images(pixels, input.grids)?;
            timings.vision_encode_ms = ms(started);
            Some(&encoded)
        }
        (None, None) => None,
    };
    let prefill_started = Instant::now();
    let hidden = model.prefill(input.input_ids, image_embeds, input.grids, cache)?;
    let last_logits = model.logits(&hidden.get(-1));
    // Synchronise with the device so the prefill time is real on CUDA too.
    let first_logits = last_logits.to_device(tch::Device::Cpu);
    timings.prefill_ms = ms(prefill_started);
    Ok((last_logits, first_logits))
}

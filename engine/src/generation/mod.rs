//! The generation loop: greedy or seeded sampling (temperature, top-k, top-p, in the order of
//! transformers' logits warpers), `max_new_tokens`, stops on eos ids and stop strings, an optional
//! grammar constraint with jump-forward over forced tokens, and timings of each phase.
//! Mirrors what `GenerationMixin.generate` does for batch size 1 with a dynamic KV cache.

use crate::error::{EngineError, Result};
use crate::qwen2_5_vl::{KvCache, Qwen25VlModel};
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

/// Incremental detokenization for `on_text`: what has been handed out so far.
#[derive(Default)]
struct TextStream {
    emitted: String,
}

impl TextStream {
    /// The new final text of `text` (the whole visible text so far), holding back a trailing
    /// replacement character (an incomplete character) and any suffix that starts a stop string.
    fn next_piece(
        &mut self,
        text: &str,
        stop_strings: &[String],
        finished: bool,
    ) -> Option<String> {
        let mut end = text.len();
        if !finished {
            if text.ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
            let held = stop_strings
                .iter()
                .flat_map(|stop| {
                    (1..stop.len())
                        .rev()
                        .filter(|&n| stop.is_char_boundary(n) && text[..end].ends_with(&stop[..n]))
                        .take(1)
                })
                .max()
                .unwrap_or(0);
            end -= held;
        }
        // Decoding a longer id sequence only appends, except around incomplete characters;
        // a rewrite of already emitted text is never re-sent.
        if end <= self.emitted.len() || !text.starts_with(&self.emitted) {
            return None;
        }
        let piece = text[self.emitted.len()..end].to_string();
        self.emitted.push_str(&piece);
        Some(piece)
    }
}

/// A small seeded generator (splitmix64) so a request's samples depend on its seed alone, not on
/// libtorch's global RNG shared by every thread.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn apply_mask(logits: &Tensor, bits: &[u32]) -> Result<Tensor> {
    let vocab = logits.size()[0] as usize;
    let allowed: Vec<bool> = (0..vocab)
        .map(|i| bits.get(i / 32).is_some_and(|w| (w >> (i % 32)) & 1 == 1))
        .collect();
    if !allowed.iter().any(|&a| a) {
        return Err(EngineError::Constraint(
            "the grammar allows no token".into(),
        ));
    }
    let mask = Tensor::from_slice(&allowed).to_device(logits.device());
    Ok(logits.masked_fill(&mask.logical_not(), f64::NEG_INFINITY))
}

/// Picks the next token from f32 logits [vocab].
fn choose(logits: &Tensor, params: &SamplingParams, rng: &mut SplitMix64) -> Result<i64> {
    if params.temperature <= 0.0 {
        return Ok(logits.argmax(-1, false).int64_value(&[]));
    }
    let mut scores: Vec<f32> =
        Vec::try_from((logits / params.temperature).to_device(tch::Device::Cpu))
            .map_err(EngineError::Torch)?;
    if params.top_k > 0 && params.top_k < scores.len() {
        let mut sorted = scores.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let threshold = sorted[params.top_k - 1];
        scores
            .iter_mut()
            .filter(|s| **s < threshold)
            .for_each(|s| *s = f32::NEG_INFINITY);
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = scores.iter().map(|&s| ((s - max) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if params.top_p < 1.0 {
        // Keep the smallest set of most likely tokens whose mass reaches top_p (at least one).
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut cumulative = 0.0;
        let mut keep = vec![false; probs.len()];
        for &i in &order {
            keep[i] = true;
            cumulative += probs[i];
            if cumulative >= params.top_p {
                break;
            }
        }
        for (p, k) in probs.iter_mut().zip(&keep) {
            if !k {
                *p = 0.0;
            }
        }
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let draw = rng.next_f64();
    let mut cumulative = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cumulative += p;
        if draw < cumulative && *p > 0.0 {
            return Ok(i as i64);
        }
    }
    Ok(probs.iter().rposition(|p| *p > 0.0).unwrap_or(0) as i64)
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
    let Decoding {
        detokenizer,
        mut constraint,
        mut on_text,
    } = decoding;
    let prompt_tokens = input.input_ids.len();
    if prompt_tokens + params.max_new_tokens > model.context_length() {
        return Err(EngineError::PromptTooLong {
            prompt_tokens,
            max_new_tokens: params.max_new_tokens,
            context: model.context_length(),
        });
    }
    let mut timings = Timings::default();
    let started = Instant::now();
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
    let reused_prompt_tokens = cache.len as usize;
    let prefill_started = Instant::now();
    let hidden = model.prefill(input.input_ids, image_embeds, input.grids, cache)?;
    let mut last_logits = model.logits(&hidden.get(-1));
    // Synchronise with the device so the prefill time is real on CUDA too.
    let first_logits = last_logits.to_device(tch::Device::Cpu);
    timings.prefill_ms = ms(prefill_started);

    let decode_started = Instant::now();
    let mut rng = SplitMix64(params.seed);
    let mut generated: Vec<i64> = Vec::new();
    let mut decode_steps = 0usize;
    let mut text_cut: Option<String> = None;
    let mut stream = TextStream::default();
    let visible_text = |generated: &[i64]| -> String {
        let visible: Vec<i64> = generated
            .iter()
            .copied()
            .filter(|t| !params.stop_token_ids.contains(t))
            .collect();
        detokenizer.map_or_else(String::new, |detok| decode(detok, &visible))
    };
    let finish_reason = 'outer: loop {
        if generated.len() >= params.max_new_tokens {
            break FinishReason::Length;
        }
        let scores = match constraint.as_deref_mut() {
            Some(c) => apply_mask(&last_logits, &c.allowed_tokens()?)?,
            None => last_logits.shallow_clone(),
        };
        let mut run = vec![choose(&scores, params, &mut rng)?];
        if generated.is_empty() {
            timings.first_token_ms = ms(started);
        }
        if let Some(c) = constraint.as_deref_mut() {
            c.consume(&[run[0] as u32], false)?;
            if !c.is_finished() {
                let forced = c.forced_tokens()?;
                let room = params.max_new_tokens - generated.len() - 1;
                let forced: Vec<u32> = forced.into_iter().take(room).collect();
                if !forced.is_empty() {
                    c.consume(&forced, true)?;
                    run.extend(forced.iter().map(|&t| t as i64));
                }
            }
        }
        // The stop-string check's decoding of the whole run, reused for streaming.
        let mut decoded: Option<String> = None;
        for (i, &token) in run.iter().enumerate() {
            generated.push(token);
            if params.stop_token_ids.contains(&token) {
                break 'outer FinishReason::Stop;
            }
            if !params.stop_strings.is_empty()
                && let Some(detok) = detokenizer
            {
                let text = decode(detok, &generated);
                let found = params
                    .stop_strings
                    .iter()
                    .filter_map(|s| text.find(s.as_str()))
                    .min();
                if let Some(cut) = found {
                    text_cut = Some(text[..cut].to_string());
                    break 'outer FinishReason::Stop;
                }
                // No stop token is in `generated` here, so this is also the visible text.
                decoded = Some(text);
            }
            if i + 1 == run.len() && constraint.as_deref().is_some_and(|c| c.is_finished()) {
                break 'outer FinishReason::Stop;
            }
        }
        if let Some(callback) = on_text.as_deref_mut()
            && let Some(piece) = stream.next_piece(
                &decoded.take().unwrap_or_else(|| visible_text(&generated)),
                &params.stop_strings,
                false,
            )
            && !callback(&piece)
        {
            break FinishReason::Cancelled;
        }
        if generated.len() >= params.max_new_tokens {
            break FinishReason::Length;
        }
        let hidden = model.forward_tokens(&run, cache)?;
        decode_steps += 1;
        last_logits = model.logits(&hidden.get(-1));
    };
    timings.decode_ms = ms(decode_started);

    let text = text_cut.unwrap_or_else(|| visible_text(&generated));
    if finish_reason != FinishReason::Cancelled
        && let Some(callback) = on_text
        && let Some(piece) = stream.next_piece(&text, &params.stop_strings, true)
    {
        // The caller has the whole text in the output; a late "stop" changes nothing.
        let _ = callback(&piece);
    }
    Ok(GenerationOutput {
        text,
        usage: Usage {
            prompt_tokens,
            completion_tokens: generated.len(),
            decode_steps,
            reused_prompt_tokens,
        },
        token_ids: generated,
        finish_reason,
        timings,
        first_logits: Some(first_logits.to_kind(Kind::Float)),
    })
}

fn decode(detok: &dyn Detokenize, ids: &[i64]) -> String {
    let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
    detok.decode(&ids)
}

/// The eos ids of a checkpoint: `generation_config.json`'s `eos_token_id` (an id or a list),
/// falling back to `config.json`'s. Never hard-coded: the tiny fixtures put them elsewhere.
pub fn eos_token_ids(model_dir: &std::path::Path) -> Result<Vec<i64>> {
    for file in ["generation_config.json", "config.json"] {
        let path = model_dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        match value.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => return Ok(n.as_i64().into_iter().collect()),
            Some(serde_json::Value::Array(items)) => {
                return Ok(items.iter().filter_map(serde_json::Value::as_i64).collect());
            }
            _ => continue,
        }
    }
    Ok(Vec::new())
}

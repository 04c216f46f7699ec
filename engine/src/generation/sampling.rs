//! Choosing one token from logits: the grammar's mask, then greedy or seeded sampling with
//! temperature, top-k and top-p in the order of transformers 4.57.6's logits warpers
//! (`src/transformers/generation/logits_process.py`: `TemperatureLogitsWarper`,
//! `TopKLogitsWarper`, `TopPLogitsWarper`).

use super::SamplingParams;
use crate::error::{EngineError, Result};
use tch::Tensor;

/// A small seeded generator (splitmix64) so a request's samples depend on its seed alone, not on
/// libtorch's global RNG shared by every thread.
pub(super) struct SplitMix64(pub(super) u64);

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

/// `logits` with every token outside `bits` (bit `i % 32` of word `i / 32`) at `-inf`.
pub(super) fn apply_mask(logits: &Tensor, bits: &[u32]) -> Result<Tensor> {
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
pub(super) fn choose(
    logits: &Tensor,
    params: &SamplingParams,
    rng: &mut SplitMix64,
) -> Result<i64> {
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
        keep_nucleus(&mut probs, params.top_p);
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

/// Keeps the smallest set of most likely tokens whose mass reaches `top_p` (at least one) and
/// renormalises.
fn keep_nucleus(probs: &mut [f64], top_p: f64) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut cumulative = 0.0;
    let mut keep = vec![false; probs.len()];
    for &i in &order {
        keep[i] = true;
        cumulative += probs[i];
        if cumulative >= top_p {
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

//! Putting an adapter into the model. Unmerged (the default) sets each targeted `Linear`'s
//! `lora` slot to the adapter's factors, so `y = W x + scale · B(A x)` as PEFT computes it and
//! switching adapters per request is a pointer swap per layer. Merged folds `scale · B A` into
//! the base weights once: no extra matmuls, but the base weights are replaced for good.

use super::adapter::LoraAdapter;
use super::targets::{visit_linears, visit_linears_mut};
use crate::error::{EngineError, Result};
use crate::nn::LoraDelta;
use crate::quant::Weight;
use crate::qwen2_5_vl::Qwen25VlModel;

/// Makes `adapter` the active one: every module it targets gets its factors, every other
/// module runs without a delta. Costs no tensor work.
pub fn attach_adapter(model: &mut Qwen25VlModel, adapter: &LoraAdapter) {
    visit_linears_mut(model, |path, linear| {
        linear.lora = adapter.modules.get(path).map(|w| LoraDelta {
            a: w.a.shallow_clone(),
            b: w.b.shallow_clone(),
            scale: w.scale,
        });
    });
}

/// Runs the base model only.
pub fn detach_adapters(model: &mut Qwen25VlModel) {
    visit_linears_mut(model, |_, linear| linear.lora = None);
}

/// Folds `adapter` into the base weights (`W += scale · B A`, computed in f32) and clears the
/// unmerged slots. The previous weights are not kept: use this for a deployment with one fixed
/// adapter.
///
/// Quantized layers cannot take a merge (the sum would be requantized, losing the adapter's
/// small update in the rounding): with `--quant`, adapters stay unmerged, and merging a
/// model with a quantized targeted layer is refused before anything changes.
pub fn merge_adapter(model: &mut Qwen25VlModel, adapter: &LoraAdapter) -> Result<()> {
    let mut quantized = None;
    visit_linears(model, |path, linear| {
        if adapter.modules.contains_key(path) && linear.weight.dense().is_none() {
            quantized.get_or_insert_with(|| path.to_string());
        }
    });
    if let Some(path) = quantized {
        return Err(EngineError::Config(format!(
            "cannot merge an adapter into `{path}`, which is quantized: quantized models apply adapters unmerged"
        )));
    }
    let _guard = tch::no_grad_guard();
    visit_linears_mut(model, |path, linear| {
        linear.lora = None;
        if let (Some(w), Some(base)) = (adapter.modules.get(path), linear.weight.dense()) {
            let kind = base.kind();
            let delta =
                w.b.to_kind(tch::Kind::Float)
                    .matmul(&w.a.to_kind(tch::Kind::Float))
                    * w.scale;
            // A new tensor, not an in-place add: other holders of the old weight (a tied
            // embedding, a snapshot) keep seeing the base model.
            linear.weight = Weight::Dense((base.to_kind(tch::Kind::Float) + delta).to_kind(kind));
        }
    });
    model.refuse_projections();
    Ok(())
}

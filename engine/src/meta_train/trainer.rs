//! Training one LoRA adapter with libtorch autograd: the base model frozen, LoRA factors on
//! every attention and MLP projection of the language model as trainable f32 master weights
//! (cast to the model dtype in the forward pass, so bf16 on GPU still updates in f32), AdamW as
//! `torch.optim.AdamW` computes it, gradient accumulation over single examples for the
//! effective batch, and a checkpoint every few steps from which a rerun resumes exactly.

use super::examples::TrainingExample;
use crate::error::{EngineError, Result};
use crate::lora::targets::{linear_shape, visit_linears, visit_linears_mut};
use crate::nn::LoraDelta;
use crate::qwen2_5_vl::Qwen25VlModel;
use crate::qwen2_5_vl::rope::{MultimodalRotary, rope_index};
use crate::qwen2_5_vl::text::KvCache;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The modules meta-training adapts, as a PEFT `target_modules` pattern: every attention and MLP
/// projection of the language model (the vision tower's MLP shares the names, so a plain list
/// would also select it).
pub const LANGUAGE_MODEL_PROJECTIONS: &str = r"model\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))";

/// One adapter's training recipe; `MetaTrainConfig::new` has the paper's (appendix C).
#[derive(Debug, Clone)]
pub struct TrainerSettings {
    pub rank: i64,
    pub alpha: f64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Optimizer steps per adapter.
    pub steps: usize,
    /// Examples per optimizer step (accumulated one at a time).
    pub batch_size: usize,
    pub seed: u64,
    pub checkpoint_every: usize,
}

/// The trainable factors and AdamW moments, in a fixed order: A then B of each module.
pub struct LoraTrainingState {
    pub modules: Vec<String>,
    pub params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    pub step: usize,
    pub losses: Vec<f64>,
}

const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
const ADAM_EPS: f64 = 1e-8;

impl LoraTrainingState {
    /// PEFT's initialisation: A ~ kaiming-uniform(a = sqrt 5), i.e. U(-1/sqrt(in), 1/sqrt(in)),
    /// B = 0, drawn from libtorch's generator seeded with `seed`.
    pub fn new(model: &Qwen25VlModel, rank: i64, seed: u64, device: Device) -> Self {
        let pattern = regex::Regex::new(&format!("^(?:{LANGUAGE_MODEL_PROJECTIONS})$"))
            .expect("valid pattern");
        tch::manual_seed(seed as i64);
        let mut modules = Vec::new();
        let mut params = Vec::new();
        visit_linears(model, |path, linear| {
            if !pattern.is_match(path) {
                return;
            }
            let (in_features, out_features) = linear_shape(linear);
            let bound = 1.0 / (in_features as f64).sqrt();
            let a = Tensor::empty([rank, in_features], (Kind::Float, Device::Cpu))
                .uniform_(-bound, bound);
            let b = Tensor::zeros([out_features, rank], (Kind::Float, Device::Cpu));
            params.push(a.to_device(device).set_requires_grad(true));
            params.push(b.to_device(device).set_requires_grad(true));
            modules.push(path.to_string());
        });
        let zeros = |p: &Tensor| p.zeros_like();
        LoraTrainingState {
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            modules,
            params,
            step: 0,
            losses: Vec::new(),
        }
    }

    /// Sets every adapted `Linear`'s LoRA slot to the current factors, in f32 whatever the
    /// model dtype (PEFT's `autocast_adapter_dtype`: `Linear::forward` sums the delta in f32).
    pub fn attach(&self, model: &mut Qwen25VlModel, scale: f64) {
        let index: BTreeMap<&str, usize> = self
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), i))
            .collect();
        visit_linears_mut(model, |path, linear| {
            linear.lora = index.get(path).map(|&i| LoraDelta {
                a: self.params[2 * i].shallow_clone(),
                b: self.params[2 * i + 1].shallow_clone(),
                scale,
            });
        });
    }

    /// One `torch.optim.AdamW` step on the accumulated gradients, then zeroes them.
    fn adamw_step(&mut self, learning_rate: f64, weight_decay: f64) {
        let _guard = tch::no_grad_guard();
        let t = (self.step + 1) as i32;
        let (beta1, beta2) = ADAM_BETAS;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2 = 1.0 - beta2.powi(t);
        for i in 0..self.params.len() {
            let param = &mut self.params[i];
            let mut grad = param.grad();
            if !grad.defined() {
                continue;
            }
            if weight_decay != 0.0 {
                let _ = param.g_mul_scalar_(1.0 - learning_rate * weight_decay);
            }
            let _ = self.exp_avg[i]
                .g_mul_scalar_(beta1)
                .g_add_(&(&grad * (1.0 - beta1)));
            let _ = self.exp_avg_sq[i]
                .g_mul_scalar_(beta2)
                .g_add_(&(grad.square() * (1.0 - beta2)));
            let denom = (&self.exp_avg_sq[i] / bias2).sqrt() + ADAM_EPS;
            let update = &self.exp_avg[i] / denom * (learning_rate / bias1);
            let _ = param.g_sub_(&update);
            let _ = grad.zero_();
        }
    }

    /// The factors as `save_peft_adapter` wants them.
    pub fn factors(&self) -> BTreeMap<String, (Tensor, Tensor)> {
        self.modules
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    m.clone(),
                    (self.params[2 * i].detach(), self.params[2 * i + 1].detach()),
                )
            })
            .collect()
    }

    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, ((p, m), v)) in self
            .params
            .iter()
            .zip(&self.exp_avg)
            .zip(&self.exp_avg_sq)
            .enumerate()
        {
            named.push((format!("param.{i}"), p.detach().to_device(Device::Cpu)));
            named.push((format!("exp_avg.{i}"), m.to_device(Device::Cpu)));
            named.push((format!("exp_avg_sq.{i}"), v.to_device(Device::Cpu)));
        }
        named.push(("step".into(), Tensor::from_slice(&[self.step as i64])));
        named.push(("losses".into(), Tensor::from_slice(&self.losses)));
        let tmp = path.with_extension("tmp");
        Tensor::write_safetensors(&named, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| checkpoint_error(path, e))
    }

    /// Restores a checkpoint written by `save_checkpoint` for the same modules and rank.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| checkpoint_error(path, e))?
            .into_iter()
            .collect();
        let take = |name: &str, like: &Tensor| -> Result<Tensor> {
            let t = tensors.get(name).ok_or_else(|| {
                checkpoint_error(
                    path,
                    format!("`{name}` is missing; delete the checkpoint to start over"),
                )
            })?;
            if t.size() != like.size() {
                return Err(checkpoint_error(
                    path,
                    "made with another rank or model; delete the checkpoint to start over",
                ));
            }
            Ok(t.to_device(like.device()))
        };
        let _guard = tch::no_grad_guard();
        for i in 0..self.params.len() {
            let saved = take(&format!("param.{i}"), &self.params[i])?;
            self.params[i].copy_(&saved);
            self.exp_avg[i] = take(&format!("exp_avg.{i}"), &self.exp_avg[i])?;
            self.exp_avg_sq[i] = take(&format!("exp_avg_sq.{i}"), &self.exp_avg_sq[i])?;
        }
        if tensors.contains_key(&format!("param.{}", self.params.len())) {
            return Err(checkpoint_error(
                path,
                "made for another model; delete the checkpoint to start over",
            ));
        }
        let step = tensors
            .get("step")
            .ok_or_else(|| checkpoint_error(path, "`step` is missing"))?;
        self.step = step.int64_value(&[0]) as usize;
        self.losses = Vec::<f64>::try_from(
            tensors
                .get("losses")
                .ok_or_else(|| checkpoint_error(path, "`losses` is missing"))?,
        )?;
        Ok(())
    }
}

fn checkpoint_error(path: &Path, message: impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The example for micro-batch `micro` of optimizer step `step`: a hash of the seed and the
/// position, so a resumed run sees exactly the examples the interrupted one would have.
pub fn example_index(
    seed: u64,
    step: usize,
    micro: usize,
    batch_size: usize,
    examples: usize,
) -> usize {
    let mut z = seed ^ ((step * batch_size + micro) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % examples as u64) as usize
}

/// Mean cross-entropy of the assistant tokens of one example, with gradients to the attached
/// LoRA factors. `image_embeds` are the example's vision-tower outputs (computed once, frozen).
pub fn example_loss(
    model: &Qwen25VlModel,
    rotary: &MultimodalRotary,
    example: &TrainingExample,
    image_embeds: Option<&Tensor>,
) -> Result<Tensor> {
    let config = &model.config;
    let ids = &example.input_ids;
    let device = model.device();
    let index = rope_index(
        ids,
        &example.grids,
        config.image_token_id,
        config.vision_start_token_id,
        config.vision.spatial_merge_size,
    )?;
    let mut embeds = model.language_model.embed(ids);
    if let Some(features) = image_embeds {
        let positions: Vec<i64> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == config.image_token_id)
            .map(|(i, _)| i as i64)
            .collect();
        if positions.len() as i64 != features.size()[0] {
            return Err(EngineError::InvalidInput(format!(
                "{} image tokens but {} image features",
                positions.len(),
                features.size()[0]
            )));
        }
        let positions = Tensor::from_slice(&positions).to_device(device);
        embeds = embeds.index_copy(1, &positions, &features.to_kind(model.kind()).unsqueeze(0));
    }
    let flat: Vec<i64> = index.positions.iter().flatten().copied().collect();
    let positions = Tensor::from_slice(&flat)
        .to_device(device)
        .view([3, ids.len() as i64]);
    let (cos, sin) = rotary.cos_sin(&positions);
    let mut cache = KvCache::new(model.language_model.layers.len());
    let hidden = model
        .language_model
        .forward(&embeds, &cos, &sin, &mut cache)
        .squeeze_dim(0);
    // Hidden state t predicts token t + 1.
    let (rows, targets): (Vec<i64>, Vec<i64>) = (1..ids.len())
        .filter(|&t| example.predict[t])
        .map(|t| ((t - 1) as i64, ids[t]))
        .unzip();
    let rows = Tensor::from_slice(&rows).to_device(device);
    let targets = Tensor::from_slice(&targets).to_device(device);
    let logits = model
        .lm_head
        .forward(&hidden.index_select(0, &rows))
        .to_kind(Kind::Float);
    Ok(logits.cross_entropy_for_logits(&targets))
}

/// Runs the optimizer from `state.step` to `settings.steps`, calling `on_step(step, loss)` after
/// each and checkpointing to `checkpoint` every `checkpoint_every` steps. A non-finite loss stops
/// training with the step at which it happened.
#[allow(clippy::too_many_arguments)]
pub fn train_adapter(
    model: &mut Qwen25VlModel,
    state: &mut LoraTrainingState,
    examples: &[TrainingExample],
    image_embeds: &[Option<Tensor>],
    settings: &TrainerSettings,
    name: &str,
    checkpoint: &Path,
    on_step: &mut dyn FnMut(usize, f64),
) -> Result<()> {
    let config = &model.config.text;
    let rotary = MultimodalRotary::new(
        config.head_dim(),
        config.rope_theta,
        config.mrope_section.clone(),
        model.device(),
    );
    let scale = settings.alpha / settings.rank as f64;
    let accumulation = settings.batch_size.max(1);
    if state.step > settings.steps {
        return Err(checkpoint_error(
            checkpoint,
            format!(
                "is at step {} but only {} steps were asked for",
                state.step, settings.steps
            ),
        ));
    }
    while state.step < settings.steps {
        state.attach(model, scale);
        let mut total = 0.0;
        for micro in 0..accumulation {
            let i = example_index(
                settings.seed,
                state.step,
                micro,
                accumulation,
                examples.len(),
            );
            let loss = example_loss(model, &rotary, &examples[i], image_embeds[i].as_ref())?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(EngineError::InvalidInput(format!(
                    "meta-concept `{name}`: the training loss is {value} at step {} (micro-batch {micro}); \
                     lower the learning rate or check the data",
                    state.step + 1
                )));
            }
            total += value;
            (loss / accumulation as f64).backward();
        }
        state.adamw_step(settings.learning_rate, settings.weight_decay);
        state.step += 1;
        let mean = total / accumulation as f64;
        state.losses.push(mean);
        on_step(state.step, mean);
        let periodic =
            settings.checkpoint_every > 0 && state.step.is_multiple_of(settings.checkpoint_every);
        // The last step is always kept, so a longer rerun continues from it.
        if periodic || state.step == settings.steps {
            state.save_checkpoint(checkpoint)?;
        }
    }
    crate::lora::detach_adapters(model);
    Ok(())
}

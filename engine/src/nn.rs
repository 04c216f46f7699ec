//! The small building blocks shared by the vision tower and the language model: `Linear`
//! (torch.nn.Linear), `GatedMlp` and `RmsNorm`, as transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py` defines `Qwen2_5_VLMLP`
//! (vision, with bias), `Qwen2MLP` (text, without) and `Qwen2RMSNorm`, and `Activation`, the
//! entries of `src/transformers/activations.py` `ACT2FN` that Qwen2.5-VL configs name.

use crate::error::Result;
use crate::quant::{Quant, Weight};
use crate::weights::WeightPath;
use tch::{Kind, Tensor};

/// A low-rank update applied next to a frozen weight: `y += scale * B(A x)`, with the factors
/// in f32 whatever the model's dtype (see `Linear::forward`).
/// The slot exists so PEFT adapters (the LoRA issue) can be attached unmerged and switched per
/// request without touching the base weight.
pub struct LoraDelta {
    /// [rank, in_features]
    pub a: Tensor,
    /// [out_features, rank]
    pub b: Tensor,
    pub scale: f64,
}

pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Tensor>,
    /// Unmerged adapter deltas; `None` runs the base weight only.
    pub lora: Option<LoraDelta>,
}

impl Linear {
    pub fn load(vs: &WeightPath, in_features: i64, out_features: i64, bias: bool) -> Result<Self> {
        let weight = vs.get("weight", &[out_features, in_features])?;
        let bias = if bias {
            Some(vs.get("bias", &[out_features])?)
        } else {
            None
        };
        Ok(Linear::from_weight(Weight::Dense(weight), bias))
    }

    /// `load`, with the weight quantized as `quant` says (read a slice of rows at a time; see
    /// `crate::quant`). `Quant::None` is `load`.
    pub fn load_quantized(
        vs: &WeightPath,
        in_features: i64,
        out_features: i64,
        bias: bool,
        quant: Quant,
    ) -> Result<Self> {
        if quant == Quant::None {
            return Self::load(vs, in_features, out_features, bias);
        }
        let weight = quantized_matrix(vs, "weight", out_features, in_features, quant)?;
        let bias = if bias {
            Some(vs.get("bias", &[out_features])?)
        } else {
            None
        };
        Ok(Linear::from_weight(weight, bias))
    }

    pub fn from_weight(weight: Weight, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.add_delta(x, self.weight.linear(x, self.bias.as_ref()))
    }

    /// `y` (this layer's base output for `x`) plus the adapter's update, if one is attached.
    fn add_delta(&self, x: &Tensor, y: Tensor) -> Tensor {
        let Some(delta) = &self.lora else {
            return y;
        };
        let kind = y.kind();
        // As PEFT 0.17.1 `lora.Linear.forward` with its default `autocast_adapter_dtype`: the
        // factors are f32, the input is cast to them, the sum is taken in f32 (the bf16 base
        // output promotes) and cast back to the model's dtype once. In f32 this is `y + BAx·s`.
        let update = x
            .to_kind(delta.a.kind())
            .linear::<Tensor>(&delta.a, None)
            .linear::<Tensor>(&delta.b, None)
            * delta.scale;
        (y.to_kind(update.kind()) + update).to_kind(kind)
    }

    pub fn out_features(&self) -> i64 {
        self.weight.shape().0
    }
}

/// The [rows, cols] matrix `name` under `vs`, quantized as `quant` says from f32 slices of rows.
pub fn quantized_matrix(
    vs: &WeightPath,
    name: &str,
    rows: i64,
    cols: i64,
    quant: Quant,
) -> Result<Weight> {
    let key = vs.key(name);
    let checkpoint = vs.checkpoint();
    Weight::quantize(quant, rows, cols, |start, count| {
        checkpoint.get_rows_f32(&key, &[rows, cols], start, count)
    })
}

/// A config's `hidden_act`, typed: a name this engine has no kernel for fails when the config
/// is read, not in the first forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `ACT2FN["silu"]`, torch.nn.SiLU: what every Qwen2.5-VL checkpoint uses, in both towers.
    #[default]
    Silu,
}

impl Activation {
    pub fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Silu => x.silu(),
        }
    }
}

/// Linear layers over the same input stored as one matrix (q/k/v, gate/up): one GEMM or
/// weight-only kernel call per token where there were two or three. Each part keeps a `Linear`
/// of its own for its LoRA slot and shape, its weight a view of its rows of the fused matrix,
/// so adapters target `q_proj`, `k_proj`, … as PEFT names them and switch per request as before.
pub struct FusedLinear {
    weight: Weight,
    bias: Option<Tensor>,
    /// In output order: part i owns the next `parts[i].out_features()` outputs.
    pub parts: Vec<Linear>,
}

impl FusedLinear {
    /// Reads `names` (each [out, in_features], with a bias if `bias`) under `vs` into one matrix
    /// in their order. Quantized as int4 only when every part is whole packing blocks, so each
    /// part's rows stay a view; otherwise int8.
    pub fn load(
        vs: &WeightPath,
        names: &[&str],
        in_features: i64,
        outs: &[i64],
        bias: bool,
        quant: Quant,
    ) -> Result<Self> {
        let parts: Vec<(String, i64)> = names
            .iter()
            .zip(outs)
            .map(|(name, &rows)| (vs.pp(name).key("weight"), rows))
            .collect();
        let checkpoint = vs.checkpoint();
        let weight = match quant {
            Quant::None => Weight::Dense(checkpoint.get_concat(&parts, in_features)?),
            _ => {
                let blocks = outs
                    .iter()
                    .all(|rows| rows % crate::quant::INT4_BLOCK_ROWS == 0);
                let quant = if blocks { quant } else { Quant::Int8 };
                let total = outs.iter().sum();
                Weight::quantize(quant, total, in_features, |start, count| {
                    stacked_rows_f32(checkpoint, &parts, in_features, start, count)
                })?
            }
        };
        let bias = if bias {
            let biases = names
                .iter()
                .zip(outs)
                .map(|(name, &rows)| vs.pp(name).get("bias", &[rows]))
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0))
        } else {
            None
        };
        let mut fused = FusedLinear {
            weight,
            bias,
            parts: Vec::new(),
        };
        fused.parts = fused.part_views(outs);
        Ok(fused)
    }

    /// Each part's `Linear` over its rows of the fused weight and bias (no LoRA).
    fn part_views(&self, outs: &[i64]) -> Vec<Linear> {
        let mut at = 0;
        outs.iter()
            .map(|&rows| {
                let part = Linear::from_weight(
                    self.weight.narrow_rows(at, rows),
                    self.bias.as_ref().map(|b| b.narrow(0, at, rows)),
                );
                at += rows;
                part
            })
            .collect()
    }

    /// The fused matrix [sum of the parts' outputs, in].
    pub fn weight(&self) -> &Weight {
        &self.weight
    }

    /// Every part's output for `x`, each with its own adapter update.
    pub fn forward(&self, x: &Tensor) -> Vec<Tensor> {
        let y = self.weight.linear(x, self.bias.as_ref());
        let mut at = 0;
        self.parts
            .iter()
            .map(|part| {
                let rows = part.out_features();
                let out = part.add_delta(x, y.narrow(-1, at, rows));
                at += rows;
                out
            })
            .collect()
    }

    /// After a merge replaced parts' weights with new tensors: rebuild the fused matrix from
    /// them, so the forward pass sees the merged model, and point the parts at it again.
    pub fn refuse(&mut self) {
        let Some(dense) = self
            .parts
            .iter()
            .map(|p| p.weight.dense().map(Tensor::shallow_clone))
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        let outs: Vec<i64> = self.parts.iter().map(Linear::out_features).collect();
        let adapters: Vec<Option<LoraDelta>> =
            self.parts.iter_mut().map(|p| p.lora.take()).collect();
        self.weight = Weight::Dense(Tensor::cat(&dense, 0));
        self.parts = self.part_views(&outs);
        for (part, lora) in self.parts.iter_mut().zip(adapters) {
            part.lora = lora;
        }
    }
}

/// Rows `start..start + count` of `parts` stacked, as f32: what quantizing a fused matrix reads.
fn stacked_rows_f32(
    checkpoint: &crate::weights::Checkpoint,
    parts: &[(String, i64)],
    cols: i64,
    start: i64,
    count: i64,
) -> Result<Tensor> {
    let (end, mut at, mut pieces) = (start + count, 0, Vec::new());
    for (key, rows) in parts {
        let (from, to) = (start.max(at), end.min(at + rows));
        if from < to {
            pieces.push(checkpoint.get_rows_f32(key, &[*rows, cols], from - at, to - from)?);
        }
        at += rows;
    }
    Ok(Tensor::cat(&pieces, 0))
}

/// `down_proj(act(gate_proj(x)) * up_proj(x))`: `Qwen2_5_VLMLP` in the vision blocks (with bias)
/// and `Qwen2MLP` in the decoder layers (without); the two are the same computation. Gate and
/// up are one fused matrix.
pub struct GatedMlp {
    /// Parts: gate_proj, up_proj.
    pub gate_up: FusedLinear,
    pub down_proj: Linear,
    act: Activation,
}

impl GatedMlp {
    pub fn load(
        vs: &WeightPath,
        hidden: i64,
        intermediate: i64,
        bias: bool,
        act: Activation,
        quant: Quant,
    ) -> Result<Self> {
        let gate_up = FusedLinear::load(
            vs,
            &["gate_proj", "up_proj"],
            hidden,
            &[intermediate, intermediate],
            bias,
            quant,
        )?;
        Ok(GatedMlp {
            gate_up,
            down_proj: Linear::load_quantized(
                &vs.pp("down_proj"),
                intermediate,
                hidden,
                bias,
                quant,
            )?,
            act,
        })
    }

    pub fn gate_proj(&self) -> &Linear {
        &self.gate_up.parts[0]
    }
    pub fn up_proj(&self) -> &Linear {
        &self.gate_up.parts[1]
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let [gate, up] = &self.gate_up.forward(x)[..] else {
            unreachable!("gate and up")
        };
        self.down_proj.forward(&(self.act.forward(gate) * up))
    }
}

/// `Qwen2RMSNorm`: normalise in f32, cast back, then scale (the cast comes before the scale).
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(vs: &WeightPath, size: i64, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: vs.get("weight", &[size])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let input_kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let variance = xf.square().mean_dim(-1, true, Kind::Float);
        let normed = xf * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(input_kind)
    }
}

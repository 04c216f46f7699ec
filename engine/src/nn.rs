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
        let y = self.weight.linear(x, self.bias.as_ref());
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

/// `down_proj(act(gate_proj(x)) * up_proj(x))`: `Qwen2_5_VLMLP` in the vision blocks (with bias)
/// and `Qwen2MLP` in the decoder layers (without); the two are the same computation.
pub struct GatedMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
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
        let load = |name: &str, i, o| Linear::load_quantized(&vs.pp(name), i, o, bias, quant);
        Ok(GatedMlp {
            gate_proj: load("gate_proj", hidden, intermediate)?,
            up_proj: load("up_proj", hidden, intermediate)?,
            down_proj: load("down_proj", intermediate, hidden)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.act.forward(&self.gate_proj.forward(x)) * self.up_proj.forward(x)))
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

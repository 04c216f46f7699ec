//! The language model, as transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py` `Qwen2_5_VLTextModel`: a Qwen2
//! decoder with grouped-query attention, q/k/v bias, M-RoPE and a KV cache, using libtorch's
//! scaled-dot-product attention.

use super::config::TextConfig;
use super::rope::apply_rotary;
use crate::error::Result;
use crate::nn::{FusedLinear, GatedMlp, Linear, RmsNorm, quantized_matrix};
use crate::quant::{Quant, Weight};
use crate::weights::WeightPath;
use tch::{Device, Kind, Tensor};

/// Keys and values of every layer for one sequence, plus the M-RoPE delta of its prompt.
///
/// Tensors are only ever replaced (never written in place), so `clone()` is a cheap snapshot for
/// prefix reuse and `truncate` keeps a prefix.
#[derive(Default)]
pub struct KvCache {
    /// Per layer: keys and values [1, kv_heads, len, head_dim].
    pub layers: Vec<Option<(Tensor, Tensor)>>,
    /// Number of positions held.
    pub len: i64,
    /// Added to a plain position to get the M-RoPE position of text after the prompt's images.
    pub rope_delta: i64,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    l.as_ref()
                        .map(|(k, v)| (k.shallow_clone(), v.shallow_clone()))
                })
                .collect(),
            len: self.len,
            rope_delta: self.rope_delta,
        }
    }
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            rope_delta: 0,
        }
    }

    /// Keeps the first `len` positions.
    pub fn truncate(&mut self, len: i64) {
        if len >= self.len {
            return;
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(2, 0, len);
            *v = v.narrow(2, 0, len);
        }
        self.len = len;
    }

    fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let merged = match self.layers[layer].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
        };
        self.layers[layer] = Some((merged.0.shallow_clone(), merged.1.shallow_clone()));
        merged
    }
}

pub struct TextAttention {
    /// Parts: q_proj, k_proj, v_proj.
    pub qkv: FusedLinear,
    pub o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
    /// `Qwen2_5_VLAttention.scaling`, `head_dim**-0.5`, passed to SDPA as HF's
    /// `sdpa_attention_forward` does (libtorch's own default, `1 / sqrt(head_dim)`, can differ
    /// from it in the last bit of the double, e.g. for head_dim 128).
    scaling: f64,
}

impl TextAttention {
    fn load(vs: &WeightPath, cfg: &TextConfig, quant: Quant) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let names = ["q_proj", "k_proj", "v_proj"];
        Ok(TextAttention {
            qkv: FusedLinear::load(vs, &names, h, &[heads, kv_heads, kv_heads], true, quant)?,
            o_proj: Linear::load_quantized(&vs.pp("o_proj"), heads, h, false, quant)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            scaling: (d as f64).powf(-0.5),
        })
    }

    /// [1, kv_heads, len, d] -> [1, heads, len, d], each K/V head repeated for its group
    /// (transformers' `repeat_kv`).
    fn repeat_kv(&self, t: &Tensor) -> Tensor {
        let [b, kv_heads, len, d] = t.size()[..] else {
            unreachable!("K/V are [batch, heads, len, head_dim]")
        };
        let groups = self.num_heads / self.num_kv_heads;
        t.unsqueeze(2)
            .expand([b, kv_heads, groups, len, d], false)
            .reshape([b, kv_heads * groups, len, d])
    }

    /// x: [1, len, hidden]; cos/sin: [len, head_dim] in the model dtype.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let len = x.size()[1];
        let shape = |t: Tensor, heads: i64| t.view([1, len, heads, self.head_dim]).transpose(1, 2);
        let [q, k, v] = &self.qkv.forward(x)[..] else {
            unreachable!("q, k and v")
        };
        let q = shape(q.shallow_clone(), self.num_heads);
        let k = shape(k.shallow_clone(), self.num_kv_heads);
        let v = shape(v.shallow_clone(), self.num_kv_heads);
        let q = apply_rotary(&q, cos, sin);
        let k = apply_rotary(&k, cos, sin);
        let (k, v) = cache.append(layer, k, v);
        // Fresh prompt: plain causal. One new token: attends to everything. Several new tokens
        // after a cached prefix (jump-forward, prefix reuse): an explicit bottom-right causal mask.
        let causal = mask.is_none() && len > 1;
        // GQA inside SDPA only without a mask: with one, libtorch falls back to the math
        // kernel, which builds the whole f32 score matrix. Then K/V are repeated per query
        // head first, as transformers' `sdpa_attention_forward` does (`use_gqa_in_sdpa`,
        // `repeat_kv`), which keeps the memory-efficient kernels.
        let grouped = self.num_heads != self.num_kv_heads;
        let (k, v) = match mask {
            Some(_) if grouped => (self.repeat_kv(&k), self.repeat_kv(&v)),
            _ => (k, v),
        };
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            causal,
            Some(self.scaling),
            grouped && mask.is_none(),
        );
        self.o_proj.forward(
            &out.transpose(1, 2)
                .reshape([1, len, self.num_heads * self.head_dim]),
        )
    }
}

pub struct DecoderLayer {
    pub self_attn: TextAttention,
    pub mlp: GatedMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn load(vs: &WeightPath, cfg: &TextConfig, quant: Quant) -> Result<Self> {
        Ok(DecoderLayer {
            self_attn: TextAttention::load(&vs.pp("self_attn"), cfg, quant)?,
            mlp: GatedMlp::load(
                &vs.pp("mlp"),
                cfg.hidden_size,
                cfg.intermediate_size,
                false,
                cfg.hidden_act,
                quant,
            )?,
            input_layernorm: RmsNorm::load(
                &vs.pp("input_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            post_attention_layernorm: RmsNorm::load(
                &vs.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
        })
    }
}

pub struct TextModel {
    /// [vocab, hidden]: dense, or quantized when it is also the (tied) `lm_head`.
    pub embed_tokens: Weight,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub config: TextConfig,
}

impl TextModel {
    /// `quant_embedding`: store the embedding quantized too (it is the tied `lm_head`, so one
    /// quantized table serves both; lookups dequantize their few rows).
    pub fn load(
        vs: &WeightPath,
        cfg: &TextConfig,
        quant: Quant,
        quant_embedding: bool,
    ) -> Result<Self> {
        let (vocab, hidden) = (cfg.vocab_size, cfg.hidden_size);
        let embed = vs.pp("embed_tokens");
        let embed_tokens = if quant_embedding && quant != Quant::None {
            quantized_matrix(&embed, "weight", vocab, hidden, quant)?
        } else {
            Weight::Dense(embed.get("weight", &[vocab, hidden])?)
        };
        Ok(TextModel {
            embed_tokens,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| DecoderLayer::load(&vs.pp("layers").pp(i), cfg, quant))
                .collect::<Result<Vec<_>>>()?,
            norm: RmsNorm::load(&vs.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            config: cfg.clone(),
        })
    }

    pub fn device(&self) -> Device {
        self.norm.weight.device()
    }
    /// The activations' dtype (bf16 when quantized).
    pub fn kind(&self) -> Kind {
        self.norm.weight.kind()
    }

    pub fn embed(&self, ids: &[i64]) -> Tensor {
        let ids = Tensor::from_slice(ids).to_device(self.device());
        self.embed_tokens
            .rows(&ids)
            .to_kind(self.kind())
            .unsqueeze(0)
    }

    /// Runs `embeds` [1, len, hidden] at M-RoPE cos/sin [len, head_dim] after `cache.len` cached
    /// positions; returns the final-norm hidden states [1, len, hidden] and extends the cache.
    pub fn forward(
        &self,
        embeds: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        let len = embeds.size()[1];
        let past = cache.len;
        let mask = (past > 0 && len > 1).then(|| {
            // Query i (at absolute position past + i) sees keys 0..=past + i.
            let rows = Tensor::arange(len, (Kind::Int64, self.device())).unsqueeze(1) + past;
            let cols = Tensor::arange(past + len, (Kind::Int64, self.device())).unsqueeze(0);
            cols.le_tensor(&rows)
        });
        let cos = cos.to_kind(self.kind());
        let sin = sin.to_kind(self.kind());
        let mut hidden = embeds.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = &hidden;
            let attn = layer.self_attn.forward(
                &layer.input_layernorm.forward(&hidden),
                &cos,
                &sin,
                cache,
                i,
                mask.as_ref(),
            );
            let h = residual + attn;
            hidden = &h
                + layer
                    .mlp
                    .forward(&layer.post_attention_layernorm.forward(&h));
        }
        cache.len += len;
        self.norm.forward(&hidden)
    }
}

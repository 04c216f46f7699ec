//! The vision tower, as transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`
//! `Qwen2_5_VisionTransformerPretrainedModel`: patch embedding (the Conv3d whose stride equals its
//! kernel), 2-D rotary, blocks of window attention with full attention in
//! `fullatt_block_indexes`, the 2x2 patch merger, and the window reordering and its inverse.
//!
//! Window attention runs per window (equal-length windows batched together), never as a dense
//! N x N mask, so the cost grows with the window size and not with the image.

use super::config::VisionConfig;
use super::rope::{rotate_half, vision_rotary_angles};
use crate::error::{EngineError, Result};
use crate::nn::{GatedMlp, Linear, RmsNorm};
use crate::weights::WeightPath;
use tch::{Kind, Tensor};

pub struct VisionAttention {
    pub qkv: Linear,
    pub proj: Linear,
    num_heads: i64,
    head_dim: i64,
    /// `Qwen2_5_VLVisionAttention.scaling`, `head_dim**-0.5`, passed to SDPA as HF does.
    scaling: f64,
}

impl VisionAttention {
    fn load(vs: &WeightPath, cfg: &VisionConfig) -> Result<Self> {
        let dim = cfg.hidden_size;
        Ok(VisionAttention {
            qkv: Linear::load(&vs.pp("qkv"), dim, dim * 3, true)?,
            proj: Linear::load(&vs.pp("proj"), dim, dim, true)?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
            scaling: (cfg.head_dim() as f64).powf(-0.5),
        })
    }

    /// x: [seq, dim]; segments: lengths of the attention windows, in order, summing to seq.
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, segments: &[i64]) -> Tensor {
        let seq = x.size()[0];
        let qkv = self
            .qkv
            .forward(x)
            .view([seq, 3, self.num_heads, self.head_dim])
            .permute([1, 0, 2, 3]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // Rotary in f32, as `apply_rotary_pos_emb_vision` does, then back to the model dtype.
        let kind = q.kind();
        let rotate = |t: &Tensor| {
            let tf = t.to_kind(Kind::Float);
            (&tf * cos + rotate_half(&tf) * sin).to_kind(kind)
        };
        // [seq, heads, hd] -> [heads, seq, hd]
        let q = rotate(&q).transpose(0, 1);
        let k = rotate(&k).transpose(0, 1);
        let v = v.transpose(0, 1);
        let mut outputs = Vec::new();
        let mut start = 0i64;
        let mut i = 0usize;
        while i < segments.len() {
            // Consecutive windows of equal length run as one batched attention call.
            let len = segments[i];
            let mut count = 1;
            while i + count < segments.len() && segments[i + count] == len {
                count += 1;
            }
            let total = len * count as i64;
            let chunk = |t: &Tensor| {
                t.narrow(1, start, total)
                    .view([self.num_heads, count as i64, len, self.head_dim])
                    .transpose(0, 1)
            };
            let out = Tensor::scaled_dot_product_attention(
                &chunk(&q),
                &chunk(&k),
                &chunk(&v),
                None::<Tensor>,
                0.0,
                false,
                Some(self.scaling),
                false,
            ); // [count, heads, len, hd]
            outputs.push(
                out.permute([0, 2, 1, 3])
                    .reshape([total, self.num_heads * self.head_dim]),
            );
            start += total;
            i += count;
        }
        self.proj.forward(&Tensor::cat(&outputs, 0))
    }
}

pub struct VisionBlock {
    pub norm1: RmsNorm,
    pub norm2: RmsNorm,
    pub attn: VisionAttention,
    pub mlp: GatedMlp,
}

impl VisionBlock {
    fn load(vs: &WeightPath, cfg: &VisionConfig) -> Result<Self> {
        Ok(VisionBlock {
            norm1: RmsNorm::load(&vs.pp("norm1"), cfg.hidden_size, 1e-6)?,
            norm2: RmsNorm::load(&vs.pp("norm2"), cfg.hidden_size, 1e-6)?,
            attn: VisionAttention::load(&vs.pp("attn"), cfg)?,
            mlp: GatedMlp::load(
                &vs.pp("mlp"),
                cfg.hidden_size,
                cfg.intermediate_size,
                true,
                cfg.hidden_act,
                crate::quant::Quant::None,
            )?,
        })
    }
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, segments: &[i64]) -> Tensor {
        let x = x + self
            .attn
            .forward(&self.norm1.forward(x), cos, sin, segments);
        &x + self.mlp.forward(&self.norm2.forward(&x))
    }
}

pub struct PatchMerger {
    pub ln_q: RmsNorm,
    /// `mlp.0` and `mlp.2` of the nn.Sequential (GELU in between).
    pub mlp_0: Linear,
    pub mlp_2: Linear,
    merged_dim: i64,
}

impl PatchMerger {
    fn load(vs: &WeightPath, cfg: &VisionConfig) -> Result<Self> {
        let merged = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(PatchMerger {
            ln_q: RmsNorm::load(&vs.pp("ln_q"), cfg.hidden_size, 1e-6)?,
            mlp_0: Linear::load(&vs.pp("mlp").pp(0), merged, merged, true)?,
            mlp_2: Linear::load(&vs.pp("mlp").pp(2), merged, cfg.out_hidden_size, true)?,
            merged_dim: merged,
        })
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.ln_q.forward(x).view([-1, self.merged_dim]);
        self.mlp_2.forward(&self.mlp_0.forward(&x).gelu("none"))
    }
}

/// Window reordering of the merge units (`get_window_index`): the permutation that groups merge
/// units window by window, and the window lengths in patches.
pub struct WindowIndex {
    pub order: Vec<i64>,
    pub window_lengths: Vec<i64>,
}

pub fn window_index(grids: &[[i64; 3]], cfg: &VisionConfig) -> WindowIndex {
    let merge = cfg.spatial_merge_size;
    let unit = merge * merge;
    let window = cfg.window_size / merge / cfg.patch_size;
    let mut order = Vec::new();
    let mut window_lengths = Vec::new();
    let mut offset = 0i64;
    for &[t, h, w] in grids {
        let (gh, gw) = (h / merge, w / merge);
        let windows_h = (gh + window - 1) / window;
        let windows_w = (gw + window - 1) / window;
        for frame in 0..t {
            for wr in 0..windows_h {
                for wc in 0..windows_w {
                    let mut count = 0;
                    for r in wr * window..((wr + 1) * window).min(gh) {
                        for c in wc * window..((wc + 1) * window).min(gw) {
                            order.push(offset + frame * gh * gw + r * gw + c);
                            count += 1;
                        }
                    }
                    // Empty windows vanish (HF's unique_consecutive on the cumulative lengths).
                    if count > 0 {
                        window_lengths.push(count * unit);
                    }
                }
            }
        }
        offset += t * gh * gw;
    }
    WindowIndex {
        order,
        window_lengths,
    }
}

/// `Qwen2_5_VisionPatchEmbed`: each patch row viewed as [channels, temporal, height, width] and
/// run through the Conv3d whose stride equals its kernel.
///
/// The same sum as one matmul with the flattened weight, but not the same rounding: libtorch's
/// CPU convolution (oneDNN) accumulates in another order than its matmul, and in bf16 that moves
/// a few outputs by one bf16 step (2 of 3,840 on the fixture image), enough to flip a greedy
/// choice at a tie later. Running HF's own op keeps bf16 bit-identical with transformers. It
/// costs on CPU: 4,096 patches at the 3B widths on 2 threads take 0.5-1 s in bf16 (21 ms as a
/// matmul) and ~0.6 s in f32 (0.1 s), against ~24 s for HF's whole 32-block tower in bf16 on the
/// same patches (2-4%).
pub struct PatchEmbed {
    /// `proj.weight`: [hidden, in_channels, temporal_patch_size, patch_size, patch_size].
    pub weight: Tensor,
}

impl PatchEmbed {
    /// pixel_values: [patches, patch_dim] in any float dtype -> [patches, hidden] in the weight's.
    fn forward(&self, pixel_values: &Tensor) -> Tensor {
        let kernel = &self.weight.size()[1..];
        let hidden = self.weight.size()[0];
        let x = pixel_values
            .to_device(self.weight.device())
            .to_kind(self.weight.kind())
            .view([-1, kernel[0], kernel[1], kernel[2], kernel[3]]);
        // The convolution `nn.Conv3d` runs, with TF32 off explicitly: cuDNN would otherwise run
        // it in TF32 in f32 (its default) while every matmul runs in full f32. The CUDA parity
        // reference (`scripts/cuda_parity.py`) sets `torch.backends.cudnn.allow_tf32 = False`
        // the same way, as the CLIP tower does (`clip/mod.rs`). On CPU the flag changes nothing.
        x.internal_convolution::<Tensor>(
            &self.weight,
            None,
            &kernel[1..],
            [0, 0, 0],
            [1, 1, 1],
            false,
            [0, 0, 0],
            1,
            false,
            false,
            tch::Cuda::user_enabled_cudnn(),
            false,
        )
        .view([-1, hidden])
    }
}

pub struct VisionTransformer {
    /// `patch_embed.proj`.
    pub patch_embed: PatchEmbed,
    pub blocks: Vec<VisionBlock>,
    pub merger: PatchMerger,
    pub config: VisionConfig,
}

impl VisionTransformer {
    pub fn load(vs: &WeightPath, cfg: &VisionConfig) -> Result<Self> {
        let kernel = [
            cfg.hidden_size,
            cfg.in_channels,
            cfg.temporal_patch_size,
            cfg.patch_size,
            cfg.patch_size,
        ];
        let patch_embed = PatchEmbed {
            weight: vs.pp("patch_embed").pp("proj").get("weight", &kernel)?,
        };
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::load(&vs.pp("blocks").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(VisionTransformer {
            patch_embed,
            blocks,
            merger: PatchMerger::load(&vs.pp("merger"), cfg)?,
            config: cfg.clone(),
        })
    }

    /// pixel_values: [patches, patch_dim]; returns the merged embeddings [patches / 4, out_hidden]
    /// in prompt order (images one after another).
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[i64; 3]]) -> Result<Tensor> {
        let cfg = &self.config;
        let merge = cfg.spatial_merge_size;
        let unit = merge * merge;
        let expected: i64 = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if grids
            .iter()
            .any(|g| g.iter().any(|&d| d <= 0) || g[1] % merge != 0 || g[2] % merge != 0)
        {
            return Err(EngineError::InvalidInput(format!(
                "image grids {grids:?} must be positive and divisible by the merge size {merge}"
            )));
        }
        if pixel_values.size() != [expected, cfg.patch_dim()] {
            return Err(EngineError::InvalidInput(format!(
                "pixel_values has shape {:?}, expected [{expected}, {}] for grids {grids:?}",
                pixel_values.size(),
                cfg.patch_dim()
            )));
        }
        let device = self.patch_embed.weight.device();
        let hidden = self.patch_embed.forward(pixel_values);
        let seq = expected;
        let windows = window_index(grids, cfg);
        let order = Tensor::from_slice(&windows.order).to_device(device);
        let reorder = |t: &Tensor| {
            t.view([seq / unit, unit, -1])
                .index_select(0, &order)
                .view([seq, -1])
        };
        let hidden = reorder(&hidden);
        let angles = reorder(&vision_rotary_angles(grids, merge, cfg.head_dim(), device));
        let emb = Tensor::cat(&[&angles, &angles], -1).unsqueeze(1); // [seq, 1, head_dim]
        let (cos, sin) = (emb.cos(), emb.sin());
        let full: Vec<i64> = grids
            .iter()
            .flat_map(|g| std::iter::repeat_n(g[1] * g[2], g[0] as usize))
            .collect();
        let mut hidden = hidden;
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = if cfg.fullatt_block_indexes.contains(&(i as i64)) {
                &full
            } else {
                &windows.window_lengths
            };
            hidden = block.forward(&hidden, &cos, &sin, segments);
        }
        let merged = self.merger.forward(&hidden);
        // Undo the window order: the inverse permutation of `order`.
        let mut inverse = vec![0i64; windows.order.len()];
        for (position, &unit_index) in windows.order.iter().enumerate() {
            inverse[unit_index as usize] = position as i64;
        }
        Ok(merged.index_select(0, &Tensor::from_slice(&inverse).to_device(device)))
    }
}

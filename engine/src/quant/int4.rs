//! Asymmetric int4 in groups along the input dimension, as libtorch's
//! `_weight_int4pack_mm_for_cpu` takes it: `w = (q - 8) · scale + zero` with q in [0, 15], and
//! per (group, output row) a bf16 (scale, zero) pair in a [in / group, out, 2] tensor.
//!
//! The packed layout (`_convert_weight_to_int4pack_for_cpu`, when `out` is a multiple of 64)
//! is blocks of 64 output rows; within a block, for each input index k, 32 bytes whose low
//! nibbles are rows 0..32 and high nibbles rows 32..64. So a slice of whole blocks packs to
//! its own rows of the [out, in / 2] result, and rows can be unpacked with tensor ops.

use crate::error::Result;
use tch::{Kind, Tensor};

/// Output rows per packing block.
pub(super) const BLOCK_N: i64 = 64;
/// Group sizes the kernel accepts, largest (fewest scales) first.
const GROUPS: [i64; 3] = [128, 64, 32];

pub struct Int4Weight {
    /// [out, in / 2] uint8 in the kernel's layout.
    packed: Tensor,
    /// [in / group, out, 2] bf16: scale, zero.
    scales_zeros: Tensor,
    group: i64,
}

impl Int4Weight {
    pub(super) fn fits(out_features: i64, in_features: i64) -> bool {
        out_features % BLOCK_N == 0 && GROUPS.iter().any(|g| in_features % g == 0)
    }

    /// Quantizes `chunk` rows (a multiple of `BLOCK_N`) at a time of the f32 matrix `rows`
    /// reads.
    pub(super) fn quantize(
        out_features: i64,
        in_features: i64,
        chunk: i64,
        mut rows: impl FnMut(i64, i64) -> Result<Tensor>,
    ) -> Result<Self> {
        let cpu = tch::Device::Cpu;
        let group = *GROUPS
            .iter()
            .find(|g| in_features % **g == 0)
            .expect("fits() was checked");
        let groups = in_features / group;
        let packed = Tensor::f_empty([out_features, in_features / 2], (Kind::Uint8, cpu))?;
        let scales_zeros = Tensor::f_empty([groups, out_features, 2], (Kind::BFloat16, cpu))?;
        let mut start = 0;
        while start < out_features {
            let count = chunk.min(out_features - start);
            let w = rows(start, count)?.view([count, groups, group]);
            let (low, high) = (w.amin([2], false), w.amax([2], false));
            let scale = ((&high - &low) / 15.0)
                .clamp_min(1e-30)
                .to_kind(Kind::BFloat16);
            let zero = (&low + scale.to_kind(Kind::Float) * 8.0).to_kind(Kind::BFloat16);
            // Rounded against the bf16 pair the kernel will use.
            let (scale_f, zero_f) = (scale.to_kind(Kind::Float), zero.to_kind(Kind::Float));
            let q = ((w - (&zero_f - &scale_f * 8.0).unsqueeze(2)) / scale_f.unsqueeze(2))
                .round()
                .clamp(0.0, 15.0)
                .to_kind(Kind::Int)
                .view([count, in_features]);
            packed
                .f_narrow(0, start, count)?
                .f_copy_(&q.f_internal_convert_weight_to_int4pack_for_cpu(1)?)?;
            scales_zeros
                .f_narrow(1, start, count)?
                .f_copy_(&Tensor::stack(&[scale, zero], 2).transpose(0, 1))?;
            start += count;
        }
        Ok(Int4Weight {
            packed,
            scales_zeros,
            group,
        })
    }

    pub fn shape(&self) -> (i64, i64) {
        let size = self.packed.size();
        (size[0], size[1] * 2)
    }

    pub fn group(&self) -> i64 {
        self.group
    }

    pub(super) fn tensors(&self) -> [&Tensor; 2] {
        [&self.packed, &self.scales_zeros]
    }

    pub(super) fn shallow_clone(&self) -> Self {
        Int4Weight {
            packed: self.packed.shallow_clone(),
            scales_zeros: self.scales_zeros.shallow_clone(),
            group: self.group,
        }
    }

    /// x [M, in] bf16 contiguous, few rows: the weight-only kernel.
    pub(super) fn kernel(&self, x: &Tensor) -> Tensor {
        x.internal_weight_int4pack_mm_for_cpu(&self.packed, self.group, &self.scales_zeros)
    }

    /// x [M, in] bf16, many rows: dequantize, then a bf16 GEMM.
    pub(super) fn via_scratch(&self, x: &Tensor) -> Tensor {
        x.linear::<Tensor>(&self.dequantize(), None)
    }

    /// The 4-bit values [out, in] as uint8.
    fn unpacked(&self) -> Tensor {
        let (out_features, in_features) = self.shape();
        let blocks = self
            .packed
            .view([out_features / BLOCK_N, in_features, BLOCK_N / 2]);
        let nibbles = Tensor::stack(
            &[
                blocks.bitwise_and(15),
                blocks.bitwise_right_shift_tensor_scalar(4),
            ],
            2,
        );
        nibbles
            .view([out_features / BLOCK_N, in_features, BLOCK_N])
            .transpose(1, 2)
            .reshape([out_features, in_features])
    }

    /// Values [rows, in] (uint8 in [0, 15]) of rows `rows` of the scale/zero tensor -> bf16.
    fn apply_scales(&self, values: Tensor, rows: Option<&Tensor>) -> Tensor {
        let n = values.size()[0];
        let in_features = values.size()[1];
        let pick = |i: i64| {
            let part = self.scales_zeros.select(2, i);
            let part = match rows {
                Some(ids) => part.index_select(1, ids),
                None => part,
            };
            part.transpose(0, 1).unsqueeze(2).to_kind(Kind::Float)
        };
        // In f32, as the kernel computes, then rounded once.
        let grouped = values
            .to_kind(Kind::Float)
            .view([n, in_features / self.group, self.group]);
        ((grouped - 8.0) * pick(0) + pick(1))
            .view([n, in_features])
            .to_kind(Kind::BFloat16)
    }

    pub(super) fn dequantize(&self) -> Tensor {
        self.apply_scales(self.unpacked(), None)
    }

    pub(super) fn rows(&self, ids: &Tensor) -> Tensor {
        let (_, in_features) = self.shape();
        let n = ids.size()[0];
        let half = BLOCK_N / 2;
        let blocks = self
            .packed
            .view([-1, in_features, half])
            .index_select(0, &ids.floor_divide_scalar(BLOCK_N));
        let within = ids.remainder(BLOCK_N);
        let column = within
            .remainder(half)
            .view([n, 1, 1])
            .expand([n, in_features, 1], false);
        let bytes = blocks.gather(2, &column, false).squeeze_dim(2);
        let high = within.ge(half).view([n, 1]);
        let values = bytes
            .bitwise_right_shift_tensor_scalar(4)
            .where_self(&high, &bytes.bitwise_and(15));
        self.apply_scales(values, Some(ids))
    }
}

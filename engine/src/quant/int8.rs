//! Symmetric int8 per output channel: `w[n, k] ≈ q[n, k] · s[n]`, q in [-127, 127], as
//! libtorch's `_weight_int8pack_mm` takes it (int8 [N, K], scales [N] in the activation dtype).

use super::scratch::with_scratch;
use crate::error::Result;
use tch::{Kind, Tensor};

pub struct Int8Weight {
    /// [out, in] int8.
    q: Tensor,
    /// [out] bf16.
    scales: Tensor,
}

impl Int8Weight {
    /// Quantizes `chunk` rows at a time of the f32 matrix `rows(start, count)` reads.
    pub(super) fn quantize(
        out_features: i64,
        in_features: i64,
        chunk: i64,
        mut rows: impl FnMut(i64, i64) -> Result<Tensor>,
    ) -> Result<Self> {
        let cpu = tch::Device::Cpu;
        let q = Tensor::f_empty([out_features, in_features], (Kind::Int8, cpu))?;
        let scales = Tensor::f_empty([out_features], (Kind::BFloat16, cpu))?;
        let mut start = 0;
        while start < out_features {
            let count = chunk.min(out_features - start);
            let w = rows(start, count)?;
            // The bf16 scale the kernel will use is the one the values are rounded against,
            // so q · s is the nearest representable point of each row.
            let s = (w.abs().amax([1], false) / 127.0)
                .clamp_min(1e-30)
                .to_kind(Kind::BFloat16);
            let values = (w / s.to_kind(Kind::Float).unsqueeze(1))
                .round()
                .clamp(-127.0, 127.0)
                .to_kind(Kind::Int8);
            q.f_narrow(0, start, count)?.f_copy_(&values)?;
            scales.f_narrow(0, start, count)?.f_copy_(&s)?;
            start += count;
        }
        Ok(Int8Weight { q, scales })
    }

    pub fn shape(&self) -> (i64, i64) {
        let size = self.q.size();
        (size[0], size[1])
    }

    pub(super) fn tensors(&self) -> [&Tensor; 2] {
        [&self.q, &self.scales]
    }

    pub(super) fn narrow_rows(&self, start: i64, count: i64) -> Self {
        Int8Weight {
            q: self.q.narrow(0, start, count),
            scales: self.scales.narrow(0, start, count),
        }
    }

    pub(super) fn shallow_clone(&self) -> Self {
        Int8Weight {
            q: self.q.shallow_clone(),
            scales: self.scales.shallow_clone(),
        }
    }

    /// x [M, in] bf16 contiguous, few rows: the weight-only kernel.
    pub(super) fn kernel(&self, x: &Tensor) -> Tensor {
        x.internal_weight_int8pack_mm(&self.q, &self.scales)
    }

    /// x [M, in] bf16, many rows: `(x q^T) · s`, the integers converted into the scratch
    /// buffer (exact: int8 values are bf16 values) and the scale applied to the output.
    pub(super) fn via_scratch(&self, x: &Tensor) -> Tensor {
        let (out_features, in_features) = self.shape();
        with_scratch([out_features, in_features], |w| {
            w.shallow_clone().copy_(&self.q);
            x.linear::<Tensor>(w, None) * &self.scales
        })
    }

    pub(super) fn dequantize(&self) -> Tensor {
        self.q.to_kind(Kind::BFloat16) * self.scales.unsqueeze(1)
    }

    pub(super) fn rows(&self, ids: &Tensor) -> Tensor {
        self.q.index_select(0, ids).to_kind(Kind::BFloat16)
            * self.scales.index_select(0, ids).unsqueeze(1)
    }
}

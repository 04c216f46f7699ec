//! Weight-only quantization for the CPU: the text decoder's linear layers (and the `lm_head`,
//! with the tied embedding it shares) stored as int8 per output channel or int4 in groups,
//! quantized at load time from the stored bf16/f32 weights, and run with libtorch's weight-only
//! kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) on bf16 activations.
//!
//! Those kernels are built for a few rows: measured on this project's 2-core AVX512 machine
//! (the issue-18 note), for the 22016 × 2048 fused gate/up shape int8 takes 1.6 ms at M=1 but
//! 154 ms at M=300, where bf16 `linear` takes 29 ms. So a call with more than
//! [`KERNEL_MAX_ROWS`] rows (a prompt's prefill, the vision-sized batches of a forced run)
//! dequantizes the layer into a per-thread scratch buffer and runs a bf16 GEMM instead, and a
//! call whose input requires grad (meta-training LoRA on a quantized base) dequantizes into a
//! fresh tensor, since the weight-only kernels have no backward.

mod int4;
mod int8;
mod scratch;

use crate::error::{EngineError, Result};
pub use int4::Int4Weight;
pub use int8::Int8Weight;
use tch::{Kind, Tensor};

/// Above this many rows a quantized layer runs as dequantize + bf16 GEMM (see the module doc):
/// the crossover measured for the decoder's shapes lies between 16 and 64 rows.
pub const KERNEL_MAX_ROWS: i64 = 32;

/// Output rows per block of the int4 kernel's packing: a slice of int4 rows on these
/// boundaries is a view.
pub const INT4_BLOCK_ROWS: i64 = int4::BLOCK_N;

/// The most bytes of full-precision rows converted at once while quantizing: a 151936 × 2048
/// `lm_head` is never whole in f32 (1.2 GB).
const QUANTIZE_CHUNK_BYTES: i64 = 64 << 20;

/// `--quant`: how the text decoder's linear layers are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Quant {
    /// The checkpoint's weights in the model dtype.
    #[default]
    None,
    /// Symmetric int8 per output channel.
    Int8,
    /// Asymmetric int4 in groups of 32 along the input dimension.
    Int4,
}

impl Quant {
    /// `none`, `int8` or `int4`; `None` is `none`.
    pub fn parse(text: Option<&str>) -> Result<Self> {
        match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
            None | Some("none") | Some("") => Ok(Quant::None),
            Some("int8") => Ok(Quant::Int8),
            Some("int4") => Ok(Quant::Int4),
            Some(_) => Err(EngineError::Config(format!(
                "unknown quantization `{}` (expected none, int8 or int4)",
                text.unwrap_or_default()
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quant::None => "none",
            Quant::Int8 => "int8",
            Quant::Int4 => "int4",
        }
    }
}

/// The weight of a linear layer: dense in the model dtype, or quantized.
pub enum Weight {
    Dense(Tensor),
    Int8(Int8Weight),
    Int4(Int4Weight),
}

impl Weight {
    /// Quantizes the `[out, in]` matrix that `rows(start, count)` reads as f32 a slice of rows
    /// at a time. Int4 needs `out` a multiple of 64 (the CPU kernel's packing block) and `in`
    /// a multiple of 32 (the group); a layer that fits neither is stored as int8.
    pub fn quantize(
        quant: Quant,
        out_features: i64,
        in_features: i64,
        rows: impl FnMut(i64, i64) -> Result<Tensor>,
    ) -> Result<Self> {
        let chunk = (QUANTIZE_CHUNK_BYTES / (4 * in_features)).max(1);
        Self::quantize_in_chunks(quant, out_features, in_features, chunk, rows)
    }

    /// `quantize`, reading about `chunk` rows at a time (rounded up to whole int4 blocks).
    pub fn quantize_in_chunks(
        quant: Quant,
        out_features: i64,
        in_features: i64,
        chunk: i64,
        rows: impl FnMut(i64, i64) -> Result<Tensor>,
    ) -> Result<Self> {
        match quant {
            Quant::None => Err(EngineError::Config(
                "Weight::quantize called without a quantization".into(),
            )),
            Quant::Int4 if Int4Weight::fits(out_features, in_features) => {
                // Whole packing blocks per slice, so each slice's packed bytes are its rows.
                let chunk = (chunk / int4::BLOCK_N).max(1) * int4::BLOCK_N;
                Int4Weight::quantize(out_features, in_features, chunk, rows).map(Weight::Int4)
            }
            _ => Int8Weight::quantize(out_features, in_features, chunk, rows).map(Weight::Int8),
        }
    }

    /// [out_features, in_features].
    pub fn shape(&self) -> (i64, i64) {
        match self {
            Weight::Dense(w) => {
                let size = w.size();
                (size[0], size[1])
            }
            Weight::Int8(w) => w.shape(),
            Weight::Int4(w) => w.shape(),
        }
    }

    /// The full-precision matrix, when the layer is not quantized.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Weight::Dense(w) => Some(w),
            _ => None,
        }
    }

    /// The dtype the layer computes in: its own when dense, bf16 when quantized.
    pub fn kind(&self) -> Kind {
        match self {
            Weight::Dense(w) => w.kind(),
            _ => Kind::BFloat16,
        }
    }

    pub fn quant(&self) -> Quant {
        match self {
            Weight::Dense(_) => Quant::None,
            Weight::Int8(_) => Quant::Int8,
            Weight::Int4(_) => Quant::Int4,
        }
    }

    /// Bytes the weight occupies (what one decode step reads of it).
    pub fn bytes(&self) -> i64 {
        let bytes = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        match self {
            Weight::Dense(w) => bytes(w),
            Weight::Int8(w) => w.tensors().iter().map(|t| bytes(t)).sum(),
            Weight::Int4(w) => w.tensors().iter().map(|t| bytes(t)).sum(),
        }
    }

    /// Rows `start..start + count` as a view (int4: on `INT4_BLOCK_ROWS` boundaries).
    pub fn narrow_rows(&self, start: i64, count: i64) -> Self {
        match self {
            Weight::Dense(w) => Weight::Dense(w.narrow(0, start, count)),
            Weight::Int8(w) => Weight::Int8(w.narrow_rows(start, count)),
            Weight::Int4(w) => Weight::Int4(w.narrow_rows(start, count)),
        }
    }

    pub fn shallow_clone(&self) -> Self {
        match self {
            Weight::Dense(w) => Weight::Dense(w.shallow_clone()),
            Weight::Int8(w) => Weight::Int8(w.shallow_clone()),
            Weight::Int4(w) => Weight::Int4(w.shallow_clone()),
        }
    }

    /// `x W^T + bias` for x [..., in_features].
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let w = match self {
            Weight::Dense(w) => return x.linear(w, bias),
            quantized => quantized,
        };
        let size = x.size();
        let in_features = size[size.len() - 1];
        let x2 = x.reshape([-1, in_features]).to_kind(Kind::BFloat16);
        let rows = x2.size()[0];
        let y = if x.requires_grad() {
            x2.linear::<Tensor>(&w.dequantize_fresh(), None)
        } else if rows <= KERNEL_MAX_ROWS {
            match w {
                Weight::Int8(q) => q.kernel(&x2.contiguous()),
                Weight::Int4(q) => q.kernel(&x2.contiguous()),
                Weight::Dense(_) => unreachable!("handled above"),
            }
        } else {
            match w {
                Weight::Int8(q) => q.via_scratch(&x2),
                Weight::Int4(q) => q.via_scratch(&x2),
                Weight::Dense(_) => unreachable!("handled above"),
            }
        };
        let y = match bias {
            Some(b) => y + b.to_kind(Kind::BFloat16),
            None => y,
        };
        let mut out_size = size;
        let last = out_size.len() - 1;
        out_size[last] = w.shape().0;
        y.reshape(out_size)
    }

    /// A new bf16 [out, in] matrix (differentiable use, tests).
    pub fn dequantize_fresh(&self) -> Tensor {
        match self {
            Weight::Dense(w) => w.shallow_clone(),
            Weight::Int8(q) => q.dequantize(),
            Weight::Int4(q) => q.dequantize(),
        }
    }

    /// Rows `ids` of the matrix, in bf16 (the quantized tied embedding's lookup), or in the
    /// model dtype when dense.
    pub fn rows(&self, ids: &Tensor) -> Tensor {
        match self {
            Weight::Dense(w) => w.index_select(0, ids),
            Weight::Int8(q) => q.rows(ids),
            Weight::Int4(q) => q.rows(ids),
        }
    }

    pub fn device(&self) -> tch::Device {
        match self {
            Weight::Dense(w) => w.device(),
            Weight::Int8(q) => q.tensors()[0].device(),
            Weight::Int4(q) => q.tensors()[0].device(),
        }
    }
}

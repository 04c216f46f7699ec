//! Asymmetric int4 in groups along the input dimension, as libtorch's
//! `_weight_int4pack_mm_for_cpu` takes it: `w = (q - 8) · scale + zero` with q in [0, 15], and
//! per (group, output row) a bf16 (scale, zero) pair in a [in / group, out, 2] tensor.
//!
//! The packed layout (`_convert_weight_to_int4pack_for_cpu`, when `out` is a multiple of 64)
//! is blocks of 64 output rows; within a block, for each input index k, 32 bytes whose low
//! nibbles are rows 0..32 and high nibbles rows 32..64. So a slice of whole blocks packs to
//! its own rows of the [out, in / 2] result, and rows can be unpacked with tensor ops.

use crate::error::Result;
use std::cell::RefCell;
use tch::{Kind, Tensor};

thread_local! {
    /// Host-side bf16 bytes of the last dequantized slice (see `Int4Weight::dequantize_rows`).
    static HOST_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The most bytes of bf16 weights dequantized at once for a prefill (see `via_scratch`).
const DEQUANTIZE_SLICE_BYTES: i64 = 8 << 20;

/// Output rows per packing block.
pub(super) const BLOCK_N: i64 = 64;
/// Inputs per (scale, zero) pair: the kernel's smallest group. Measured on the 3B-width
/// random weights, min-max rounding in groups of 32 leaves 7.8% relative weight error against
/// 10.0% in groups of 128, for 5 bits per weight instead of 4.25 (llama.cpp's Q4_K_M: 4.85),
/// and the kernel runs as fast (lm_head 151936 x 2048: 10.0 ms vs 10.8 ms, 2 threads).
const GROUP: i64 = 32;

pub struct Int4Weight {
    /// [out, in / 2] uint8 in the kernel's layout.
    packed: Tensor,
    /// [in / group, out, 2] bf16: scale, zero.
    scales_zeros: Tensor,
    group: i64,
}

impl Int4Weight {
    pub(super) fn fits(out_features: i64, in_features: i64) -> bool {
        out_features % BLOCK_N == 0 && in_features % GROUP == 0
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
        let group = GROUP;
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

    /// A view of whole packing blocks; its scales are a strided view (only the fused matrix
    /// runs the kernel, so the parts' views are never made contiguous).
    pub(super) fn narrow_rows(&self, start: i64, count: i64) -> Self {
        assert!(
            start % BLOCK_N == 0 && count % BLOCK_N == 0,
            "int4 rows are sliced on packing blocks"
        );
        Int4Weight {
            packed: self.packed.narrow(0, start, count),
            scales_zeros: self.scales_zeros.narrow(1, start, count),
            group: self.group,
        }
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

    /// x [M, in] bf16, many rows: dequantize a slice of rows at a time, each followed by its
    /// bf16 GEMM. Slices of at most `DEQUANTIZE_SLICE_BYTES` stay below glibc's mmap
    /// threshold, so their buffers are reused from the heap instead of being faulted in afresh
    /// per layer (a whole 22016 × 2048 matrix in bf16 is 90 MB of fresh pages each time).
    pub(super) fn via_scratch(&self, x: &Tensor) -> Tensor {
        let (out_features, in_features) = self.shape();
        let slice = (DEQUANTIZE_SLICE_BYTES / (2 * in_features) / BLOCK_N).max(1) * BLOCK_N;
        let mut outputs = Vec::new();
        let mut start = 0;
        while start < out_features {
            let count = slice.min(out_features - start);
            outputs.push(x.linear::<Tensor>(&self.dequantize_rows(start, count), None));
            start += count;
        }
        Tensor::cat(&outputs, -1)
    }

    /// The whole matrix in bf16 (see `dequantize_rows`).
    pub(super) fn dequantize(&self) -> Tensor {
        self.dequantize_rows(0, self.shape().0)
    }

    /// Rows `start..start + count` (whole packing blocks) in bf16, unpacked and scaled in one
    /// pass over their packed bytes on every intra-op thread. Measured on the 22016 × 2048
    /// gate/up shape, libtorch elementwise ops (mask, shift, interleave, affine) took ~300 ms
    /// where the layer's bf16 GEMM for a 300-token prompt takes 29 ms.
    fn dequantize_rows(&self, start: i64, count: i64) -> Tensor {
        let in_features = self.shape().1;
        let packed = Vec::<u8>::try_from(&self.packed.narrow(0, start, count).reshape([-1]))
            .expect("uint8 weights");
        let scales_zeros = self
            .scales_zeros
            .narrow(1, start, count)
            .to_kind(Kind::Float)
            .contiguous();
        let scales_zeros = Vec::<f32>::try_from(&scales_zeros.view([-1])).expect("float scales");
        let layout = Layout {
            rows: count as usize,
            cols: in_features as usize,
            group: self.group as usize,
        };
        HOST_BUFFER.with(|cell| {
            let mut bf16 = cell.borrow_mut();
            bf16.resize(layout.rows * layout.cols * 2, 0);
            layout.dequantize_parallel(&packed, &scales_zeros, &mut bf16);
            Tensor::f_from_data_size(&bf16, &[count, in_features], Kind::BFloat16)
                .expect("a buffer of the slice's size")
        })
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

/// Shape of a packed matrix, for the host-side dequantization.
#[derive(Clone, Copy)]
struct Layout {
    rows: usize,
    cols: usize,
    group: usize,
}

impl Layout {
    /// Splits the rows over the intra-op threads.
    fn dequantize_parallel(&self, packed: &[u8], scales_zeros: &[f32], out: &mut [u8]) {
        let blocks = self.rows / BLOCK_N as usize;
        let threads = (tch::get_num_threads().max(1) as usize).clamp(1, blocks.max(1));
        // Whole packing blocks per thread.
        let rows_per_thread = blocks.div_ceil(threads) * BLOCK_N as usize;
        std::thread::scope(|scope| {
            for (part, out) in out.chunks_mut(rows_per_thread * self.cols * 2).enumerate() {
                scope.spawn(move || {
                    self.dequantize_rows(packed, scales_zeros, part * rows_per_thread, out)
                });
            }
        });
    }

    /// Writes rows `first..` (whole packing blocks, as many as `out` holds) as little-endian
    /// bf16. Each value is `(q - 8) · scale + zero` in f32 in the kernel's order of operations,
    /// rounded once to nearest-even, so it equals libtorch's elementwise result bit for bit.
    ///
    /// Works a block and a group at a time: for each input index the block's 32 packed bytes
    /// are contiguous and give all 64 rows' values at once (a loop the compiler vectorizes),
    /// into a [group][64] tile that is then written out row by row.
    fn dequantize_rows(&self, packed: &[u8], scales_zeros: &[f32], first: usize, out: &mut [u8]) {
        let (block_rows, half) = (BLOCK_N as usize, BLOCK_N as usize / 2);
        let mut tile = vec![0u16; self.group * block_rows];
        let (mut scale, mut zero) = ([0f32; BLOCK_N as usize], [0f32; BLOCK_N as usize]);
        let row_bytes = self.cols * 2;
        for (b, rows) in out.chunks_exact_mut(block_rows * row_bytes).enumerate() {
            let block = first / block_rows + b;
            let bytes = &packed[block * self.cols * half..(block + 1) * self.cols * half];
            for g in 0..self.cols / self.group {
                for j in 0..block_rows {
                    let at = (g * self.rows + block * block_rows + j) * 2;
                    (scale[j], zero[j]) = (scales_zeros[at], scales_zeros[at + 1]);
                }
                for (kk, values) in tile.chunks_exact_mut(block_rows).enumerate() {
                    let k = g * self.group + kk;
                    let column = &bytes[k * half..(k + 1) * half];
                    let (low, high) = values.split_at_mut(half);
                    for j in 0..half {
                        let q = f32::from(column[j] & 15);
                        low[j] = bf16_bits((q - 8.0) * scale[j] + zero[j]);
                        let q = f32::from(column[j] >> 4);
                        high[j] = bf16_bits((q - 8.0) * scale[half + j] + zero[half + j]);
                    }
                }
                for (j, row) in rows.chunks_exact_mut(row_bytes).enumerate() {
                    let span = &mut row[g * self.group * 2..(g + 1) * self.group * 2];
                    for (kk, value) in span.chunks_exact_mut(2).enumerate() {
                        value.copy_from_slice(&tile[kk * block_rows + j].to_le_bytes());
                    }
                }
            }
        }
    }
}

/// f32 -> bf16 bits, round to nearest even (finite values: these are weights).
fn bf16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

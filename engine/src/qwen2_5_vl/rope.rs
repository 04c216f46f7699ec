//! Rotary position embeddings of Qwen2.5-VL, as transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`:
//! the vision tower's 2-D rotary (`Qwen2_5_VisionRotaryEmbedding`, `rot_pos_emb`), the language
//! model's multimodal M-RoPE (`Qwen2_5_VLRotaryEmbedding`, `apply_multimodal_rotary_pos_emb`) and
//! the 3-D position ids (`Qwen2_5_VLModel.get_rope_index`).

use crate::error::{EngineError, Result};
use tch::{Device, Kind, Tensor};

/// `rotate_half`: [x1, x2] -> [-x2, x1] on the last dimension.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[x2.neg(), x1], -1)
}

/// `1 / theta^(2i / dim)` for i in 0..dim/2, in f32.
fn inverse_frequencies(dim: i64, theta: f64, device: Device) -> Tensor {
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)) / dim as f64;
    Tensor::from(theta)
        .to_kind(Kind::Float)
        .to_device(device)
        .pow(&exponents)
        .reciprocal()
}

/// Per-patch (height, width) positions of the vision tower, in the merge-unit order the patches
/// arrive in (`rot_pos_emb`): each 2x2 merge unit is contiguous.
pub fn vision_patch_positions(grids: &[[i64; 3]], merge: i64) -> Vec<[i64; 2]> {
    let mut positions = Vec::new();
    for &[t, h, w] in grids {
        let mut one = Vec::with_capacity((h * w) as usize);
        for block_row in 0..h / merge {
            for block_col in 0..w / merge {
                for r in 0..merge {
                    for c in 0..merge {
                        one.push([block_row * merge + r, block_col * merge + c]);
                    }
                }
            }
        }
        for _ in 0..t {
            positions.extend_from_slice(&one);
        }
    }
    positions
}

/// The vision tower's rotary angles, [patches, head_dim / 2]: height angles then width angles.
pub fn vision_rotary_angles(
    grids: &[[i64; 3]],
    merge: i64,
    head_dim: i64,
    device: Device,
) -> Tensor {
    let dim = head_dim / 2;
    let inv_freq = inverse_frequencies(dim, 10000.0, device);
    let max_grid = grids.iter().map(|g| g[1].max(g[2])).max().unwrap_or(1);
    let seq = Tensor::arange(max_grid, (Kind::Float, device));
    let table = seq.outer(&inv_freq); // [max_grid, dim/2]
    let positions = vision_patch_positions(grids, merge);
    let flat: Vec<i64> = positions.iter().flat_map(|p| [p[0], p[1]]).collect();
    let index = Tensor::from_slice(&flat).to_device(device).view([-1, 2]);
    // table[pos_ids] -> [patches, 2, dim/2], flattened to [patches, dim].
    table
        .index_select(0, &index.flatten(0, -1))
        .view([positions.len() as i64, -1])
}

/// 3-D position ids of a prompt ([3][len]) and the rope delta that decoding adds to plain
/// positions, as `get_rope_index` computes them for images (videos are not accepted here).
pub struct RopeIndex {
    pub positions: [Vec<i64>; 3],
    pub delta: i64,
}

pub fn rope_index(
    input_ids: &[i64],
    grids: &[[i64; 3]],
    image_token_id: i64,
    vision_start_token_id: i64,
    merge: i64,
) -> Result<RopeIndex> {
    let mut positions: [Vec<i64>; 3] = Default::default();
    // Images are counted the way HF counts them: a vision_start directly followed by an image pad.
    let image_count = input_ids
        .windows(2)
        .filter(|w| w[0] == vision_start_token_id && w[1] == image_token_id)
        .count();
    if image_count != grids.len() {
        return Err(EngineError::InvalidInput(format!(
            "prompt has {image_count} images but {} image grids were given",
            grids.len()
        )));
    }
    let mut start = 0usize;
    let mut next_position = 0i64;
    for &[t, h, w] in grids {
        let Some(offset) = input_ids[start..]
            .iter()
            .position(|&id| id == image_token_id)
        else {
            return Err(EngineError::InvalidInput(
                "image grid without image tokens".into(),
            ));
        };
        let end = start + offset;
        push_text(&mut positions, next_position, offset);
        let base = next_position + offset as i64;
        let (gh, gw) = (h / merge, w / merge);
        push_image(&mut positions, base, [t, gh, gw]);
        let image_tokens = (t * gh * gw) as usize;
        if end + image_tokens > input_ids.len()
            || input_ids[end..end + image_tokens]
                .iter()
                .any(|&id| id != image_token_id)
        {
            return Err(EngineError::InvalidInput(format!(
                "an image of grid {t}x{h}x{w} needs {image_tokens} consecutive image tokens"
            )));
        }
        next_position = base + gh.max(gw).max(if t > 0 { 1 } else { 0 });
        start = end + image_tokens;
    }
    push_text(&mut positions, next_position, input_ids.len() - start);
    let max = positions
        .iter()
        .flat_map(|a| a.iter())
        .copied()
        .max()
        .unwrap_or(-1);
    Ok(RopeIndex {
        positions,
        delta: max + 1 - input_ids.len() as i64,
    })
}

/// `count` text tokens from `first` on: the same position on all three axes.
fn push_text(positions: &mut [Vec<i64>; 3], first: i64, count: usize) {
    for i in 0..count as i64 {
        for axis in positions.iter_mut() {
            axis.push(first + i);
        }
    }
}

/// An image's merged patches at `base`: height and width indices on their axes. Images have
/// second_per_grid_t = 0, so every temporal index is `base`.
fn push_image(positions: &mut [Vec<i64>; 3], base: i64, [t, rows, cols]: [i64; 3]) {
    for _ in 0..t {
        for row in 0..rows {
            for col in 0..cols {
                positions[0].push(base);
                positions[1].push(base + row);
                positions[2].push(base + col);
            }
        }
    }
}

/// M-RoPE cos/sin for positions [3][len]: [len, head_dim] each, in f32, with the channel
/// sections taken from the temporal, height and width rows in turn.
pub struct MultimodalRotary {
    inv_freq: Tensor,
    mrope_section: Vec<i64>,
}

impl MultimodalRotary {
    pub fn new(head_dim: i64, theta: f64, mrope_section: Vec<i64>, device: Device) -> Self {
        MultimodalRotary {
            inv_freq: inverse_frequencies(head_dim, theta, device),
            mrope_section,
        }
    }

    /// positions: [3, len] int64 on the model device.
    pub fn cos_sin(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1); // [3, len, head_dim]
        let sections: Vec<i64> = self
            .mrope_section
            .iter()
            .chain(self.mrope_section.iter())
            .copied()
            .collect();
        let select = |full: Tensor| {
            let parts = full.split_with_sizes(&sections, -1);
            let picked: Vec<Tensor> = parts
                .iter()
                .enumerate()
                .map(|(i, part)| part.get((i % 3) as i64))
                .collect();
            Tensor::cat(&picked, -1)
        };
        (select(emb.cos()), select(emb.sin()))
    }
}

/// q * cos + rotate_half(q) * sin, with cos/sin [len, head_dim] broadcast over heads.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

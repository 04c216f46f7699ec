//! Pillow-exact `Image.resize(size, Image.BICUBIC)` on 8-bit RGB.
//!
//! Mirrors Pillow 12's `libImaging/Resample.c` (`ImagingResampleInner` and the 8bpc passes):
//! - coefficients are computed in f64 per output pixel (support = 2 × max(scale, 1), window
//!   bounds rounded with `(int)(x + 0.5)`, weights normalised to sum 1), then converted to
//!   fixed point with `PRECISION_BITS = 22`, rounding half away from zero;
//! - the horizontal pass runs first, only over the source rows the vertical pass will read,
//!   and its output is clipped to u8; the vertical pass then runs on that u8 image;
//! - each accumulator starts at `1 << 21` (round half up) and the result is
//!   `clamp(acc >> 22, 0, 255)` with an arithmetic shift;
//! - a pass whose size does not change is skipped, and an unchanged size is a plain copy.
//!
//! Both HF image processors (Qwen2-VL's `smart_resize` path and CLIP's shortest-edge path)
//! resize through `PIL.Image.resize` with `reducing_gap=None`, which is exactly this.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's BICUBIC kernel (a = -0.5) and its support radius.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}
const BICUBIC_SUPPORT: f64 = 2.0;

/// Per-output-pixel source window and fixed-point weights along one axis.
struct AxisCoefficients {
    /// `ksize` weights per output pixel; only the first `bounds[i].1` of each are used.
    ksize: usize,
    weights: Vec<i32>,
    /// (first source index, number of source pixels) per output pixel.
    bounds: Vec<(usize, usize)>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn precompute_coefficients(in_size: usize, out_size: usize) -> AxisCoefficients {
    // Pillow keeps the box in f32; for a whole-image box the values are exact integers.
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;

    let mut weights = vec![0i32; out_size * ksize];
    let mut bounds = Vec::with_capacity(out_size);
    let mut window = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `(int)` truncates toward zero, as in C.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, w) in window.iter_mut().enumerate().take(count) {
            *w = bicubic_filter(((x + xmin) as f64 - center + 0.5) * ss);
            total += *w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..count {
            let k = if total != 0.0 {
                window[x] / total
            } else {
                window[x]
            };
            let scaled = k * f64::from(1u32 << PRECISION_BITS);
            row[x] = if k < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin, count));
    }
    AxisCoefficients {
        ksize,
        weights,
        bounds,
    }
}

#[inline]
fn clip8(accumulator: i32) -> u8 {
    (accumulator >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes `rows` source rows starting at `first_row` horizontally to `out_width`.
fn resample_horizontal(
    source: &[u8],
    source_width: usize,
    first_row: usize,
    rows: usize,
    coefficients: &AxisCoefficients,
) -> Vec<u8> {
    let out_width = coefficients.bounds.len();
    let mut out = vec![0u8; out_width * rows * 3];
    for yy in 0..rows {
        let source_row = &source[(yy + first_row) * source_width * 3..][..source_width * 3];
        let out_row = &mut out[yy * out_width * 3..][..out_width * 3];
        for (xx, &(xmin, count)) in coefficients.bounds.iter().enumerate() {
            let k = &coefficients.weights[xx * coefficients.ksize..][..count];
            let (mut s0, mut s1, mut s2) = (ROUNDING, ROUNDING, ROUNDING);
            for (x, &w) in k.iter().enumerate() {
                let p = &source_row[(x + xmin) * 3..][..3];
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            out_row[xx * 3] = clip8(s0);
            out_row[xx * 3 + 1] = clip8(s1);
            out_row[xx * 3 + 2] = clip8(s2);
        }
    }
    out
}

/// Resizes every column vertically; `row_offset` is subtracted from the window starts.
fn resample_vertical(
    source: &[u8],
    width: usize,
    row_offset: usize,
    coefficients: &AxisCoefficients,
) -> Vec<u8> {
    let out_height = coefficients.bounds.len();
    let stride = width * 3;
    let mut out = vec![0u8; stride * out_height];
    let mut accumulators = vec![0i32; stride];
    for (yy, &(ymin, count)) in coefficients.bounds.iter().enumerate() {
        let k = &coefficients.weights[yy * coefficients.ksize..][..count];
        accumulators.fill(ROUNDING);
        for (y, &w) in k.iter().enumerate() {
            let source_row = &source[(y + ymin - row_offset) * stride..][..stride];
            for (acc, &p) in accumulators.iter_mut().zip(source_row) {
                *acc += i32::from(p) * w;
            }
        }
        for (o, &acc) in out[yy * stride..][..stride].iter_mut().zip(&accumulators) {
            *o = clip8(acc);
        }
    }
    out
}

/// `image.resize((out_width, out_height), Image.BICUBIC)` for an RGB image, bit-exact.
pub fn resize_bicubic_like_pillow(image: &RgbImage, out_width: u32, out_height: u32) -> RgbImage {
    let (in_width, in_height) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (out_width as usize, out_height as usize);
    if (in_width, in_height) == (out_w, out_h) {
        return image.clone();
    }
    let need_horizontal = out_w != in_width;
    let need_vertical = out_h != in_height;
    let horizontal = precompute_coefficients(in_width, out_w);
    let vertical = precompute_coefficients(in_height, out_h);

    // Rows the vertical pass reads; the horizontal pass computes only those.
    let first_row = vertical.bounds.first().map_or(0, |b| b.0);
    let last_row = vertical.bounds.last().map_or(0, |b| b.0 + b.1);

    let source = image.as_raw();
    let (mut pixels, mut width, mut row_offset) = (None, in_width, 0);
    if need_horizontal {
        pixels = Some(resample_horizontal(
            source,
            in_width,
            first_row,
            last_row - first_row,
            &horizontal,
        ));
        width = out_w;
        row_offset = first_row;
    }
    let result = if need_vertical {
        let input = pixels.as_deref().unwrap_or(source);
        resample_vertical(input, width, row_offset, &vertical)
    } else {
        pixels.expect("a size change needs at least one pass")
    };
    RgbImage::from_raw(out_width, out_height, result).expect("buffer sized for the output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_pixel_sum_to_one_in_fixed_point() {
        for (input, output) in [(640, 252), (100, 392), (37, 28), (1000, 3)] {
            let c = precompute_coefficients(input, output);
            for (i, &(_, count)) in c.bounds.iter().enumerate() {
                let sum: i64 = c.weights[i * c.ksize..][..count]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                // Rounding each weight separately can miss 1 << 22 by a few units.
                assert!((sum - (1 << PRECISION_BITS)).abs() <= count as i64, "{sum}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_in_both_directions() {
        let flat = RgbImage::from_pixel(50, 30, image::Rgb([7, 130, 255]));
        for (w, h) in [(28, 28), (140, 56), (50, 84), (13, 30)] {
            let out = resize_bicubic_like_pillow(&flat, w, h);
            assert!(out.pixels().all(|p| p.0 == [7, 130, 255]), "{w}x{h}");
        }
    }
}

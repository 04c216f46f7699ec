//! Image preprocessing against HF's slow `Qwen2VLImageProcessor` and Pillow, on the outputs
//! recorded by `engine/tests/fixtures/preprocess/make_fixtures.py`:
//! decoded pixels (SHA-256 of `load_image`'s RGB), Pillow BICUBIC resizes (exact),
//! `pixel_values` (≤ 1e-6) and `image_grid_thw` (exact). Also the bad-input errors.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::Value;
use slc_engine::preprocess::{
    DecodeLimits, PixelBudget, PreprocessError, Qwen2VlImageProcessor, decode_rgb,
    resize_bicubic_like_pillow, smart_resize,
};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

pub fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn reference_bytes() -> Vec<u8> {
    std::fs::read(fixtures_dir().join("reference.safetensors")).unwrap()
}

pub fn tensor_f32(tensors: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), data)
}

pub fn tensor_i64(tensors: &SafeTensors, name: &str) -> Vec<i64> {
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name}");
    view.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn load_fixture_image(file: &str) -> image::RgbImage {
    let bytes = std::fs::read(fixtures_dir().join("images").join(file)).unwrap();
    decode_rgb(&bytes, DecodeLimits::default()).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn decoded_pixels_equal_transformers_load_image() {
    let manifest = manifest();
    let decoded = manifest["decoded"].as_object().unwrap();
    assert!(decoded.len() >= 15, "fixture lists too few images");
    let mut mismatches = Vec::new();
    for (file, expected) in decoded {
        let image = load_fixture_image(file);
        let shape = [image.height() as u64, image.width() as u64, 3];
        let expected_shape: Vec<u64> = expected["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        if expected_shape != shape {
            mismatches.push(format!("{file}: shape {shape:?} != {expected_shape:?}"));
            continue;
        }
        if sha256_hex(image.as_raw()) != expected["sha256"].as_str().unwrap() {
            mismatches.push(format!("{file}: pixels differ from Pillow's"));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[test]
fn bicubic_resize_equals_pillow_exactly() {
    let manifest = manifest();
    let bytes = reference_bytes();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    for case in manifest["resize_cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let source = load_fixture_image(case["file"].as_str().unwrap());
        let (width, height) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let ours = resize_bicubic_like_pillow(&source, width, height);
        let view = tensors.tensor(&format!("resize.{name}")).unwrap();
        assert_eq!(view.shape(), [height as usize, width as usize, 3], "{name}");
        let differing = ours
            .as_raw()
            .iter()
            .zip(view.data())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "{name}: {differing} bytes differ from Pillow");
    }
}

#[test]
fn pixel_values_and_grids_equal_hf_qwen2vl_image_processor() {
    let manifest = manifest();
    let bytes = reference_bytes();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let processor =
        Qwen2VlImageProcessor::from_model_dir(&fixtures_dir().join("tokenizer")).unwrap();
    let cases = manifest["pixel_cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let image = load_fixture_image(case["file"].as_str().unwrap());
        let budget = PixelBudget {
            min_pixels: case["min_pixels"].as_u64(),
            max_pixels: case["max_pixels"].as_u64(),
        };
        let ours = processor.preprocess(&[image], budget).unwrap();
        let grid = tensor_i64(&tensors, &format!("{name}.image_grid_thw"));
        let our_grid: Vec<i64> = ours.image_grid_thw[0].iter().map(|&v| v as i64).collect();
        assert_eq!(our_grid, grid, "{name}: grid");
        let (shape, expected) = tensor_f32(&tensors, &format!("{name}.pixel_values"));
        assert_eq!(shape, [ours.num_patches(), ours.patch_dim], "{name}: shape");
        let max_diff = ours
            .pixel_values
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff <= 1e-6, "{name}: max abs diff {max_diff}");
    }
}

#[test]
fn several_images_concatenate_in_prompt_order() {
    let processor =
        Qwen2VlImageProcessor::from_model_dir(&fixtures_dir().join("tokenizer")).unwrap();
    let a = load_fixture_image("rgb_123x77.png");
    let b = load_fixture_image("tiny_20x15.png");
    let both = processor
        .preprocess(&[a.clone(), b.clone()], PixelBudget::default())
        .unwrap();
    let only_a = processor.preprocess(&[a], PixelBudget::default()).unwrap();
    let only_b = processor.preprocess(&[b], PixelBudget::default()).unwrap();
    assert_eq!(
        both.image_grid_thw,
        [only_a.image_grid_thw[0], only_b.image_grid_thw[0]]
    );
    let mut concatenated = only_a.pixel_values.clone();
    concatenated.extend_from_slice(&only_b.pixel_values);
    assert_eq!(both.pixel_values, concatenated);
    assert_eq!(both.image_token_count(0, 2), 48 / 4);
}

#[test]
fn smart_resize_follows_python_rounding_and_budgets() {
    // round(70 / 28) = round(2.5) = 2 in Python (half to even), not 3.
    assert_eq!(
        smart_resize(70, 70, 28, 56 * 56, 28 * 28 * 1280).unwrap(),
        (56, 56)
    );
    // round(98 / 28) = round(3.5) = 4.
    assert_eq!(
        smart_resize(98, 98, 28, 56 * 56, 28 * 28 * 1280).unwrap(),
        (112, 112)
    );
    // Below min_pixels: scaled up, ceil.
    assert_eq!(
        smart_resize(15, 20, 28, 56 * 56, 28 * 28 * 1280).unwrap(),
        (56, 84)
    );
    // Above max_pixels: scaled down, floor, at least one factor.
    let (h, w) = smart_resize(4000, 3000, 28, 56 * 56, 28 * 28 * 256).unwrap();
    assert!(
        h * w <= 28 * 28 * 256 && h % 28 == 0 && w % 28 == 0,
        "{h}x{w}"
    );
    assert!(matches!(
        smart_resize(10, 2001, 28, 56 * 56, 28 * 28 * 1280),
        Err(PreprocessError::InvalidImageGeometry(_))
    ));
}

fn fixture_bytes(file: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join("images").join(file)).unwrap()
}

#[test]
fn truncated_jpeg_is_a_corrupt_image_error() {
    let result = decode_rgb(&fixture_bytes("truncated.jpg"), DecodeLimits::default());
    assert!(
        matches!(result, Err(PreprocessError::CorruptImage(_))),
        "{result:?}"
    );
}

#[test]
fn corrupt_png_is_a_corrupt_image_error() {
    let result = decode_rgb(&fixture_bytes("corrupt.png"), DecodeLimits::default());
    assert!(
        matches!(result, Err(PreprocessError::CorruptImage(_))),
        "{result:?}"
    );
}

#[test]
fn unknown_bytes_and_unaccepted_formats_are_unsupported() {
    let text = b"this is not an image at all, just some text".to_vec();
    assert!(matches!(
        decode_rgb(&text, DecodeLimits::default()),
        Err(PreprocessError::UnsupportedImage(_))
    ));
    // A TIFF header: a known format we do not accept.
    let tiff = b"II*\x00\x08\x00\x00\x00\x00\x00".to_vec();
    assert!(matches!(
        decode_rgb(&tiff, DecodeLimits::default()),
        Err(PreprocessError::UnsupportedImage(_))
    ));
    assert!(matches!(
        decode_rgb(&[], DecodeLimits::default()),
        Err(PreprocessError::UnsupportedImage(_))
    ));
}

/// A PNG whose header claims 100 000 × 100 000 pixels but carries a few bytes of pixel data:
/// the cap must trip from the header alone (decoding it would need 30 GB).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&[kind.as_slice(), data].concat());
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn an_image_above_the_pixel_cap_is_refused_from_its_header() {
    let huge = png_header_only(100_000, 100_000);
    let started = std::time::Instant::now();
    let result = decode_rgb(&huge, DecodeLimits::default());
    assert!(
        matches!(
            result,
            Err(PreprocessError::ImageTooLarge {
                width: 100_000,
                height: 100_000,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed().as_secs() < 2);

    // A real JPEG over a small cap: refused before decoding, accepted under a larger one.
    let jpeg = fixture_bytes("bo_concept.jpg");
    let small_cap = DecodeLimits {
        max_pixels: 360 * 640 - 1,
    };
    assert!(matches!(
        decode_rgb(&jpeg, small_cap),
        Err(PreprocessError::ImageTooLarge { .. })
    ));
    let exact_cap = DecodeLimits {
        max_pixels: 360 * 640,
    };
    assert!(decode_rgb(&jpeg, exact_cap).is_ok());
}

#[test]
fn clip_pixel_values_equal_hf_clip_image_processor() {
    use slc_engine::preprocess::{ClipImageProcessor, ClipImageProcessorConfig};
    let manifest = manifest();
    let bytes = reference_bytes();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let cases = manifest["clip_cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let config: ClipImageProcessorConfig =
            serde_json::from_value(case["preprocessor_config"].clone()).unwrap();
        let processor = ClipImageProcessor::new(config).unwrap();
        let ours = processor
            .preprocess(&load_fixture_image(case["file"].as_str().unwrap()))
            .unwrap();
        let (shape, expected) = tensor_f32(&tensors, &format!("{name}.pixel_values"));
        assert_eq!(shape, [3, ours.height, ours.width], "{name}: shape");
        let max_diff = ours
            .data
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(max_diff, 0.0, "{name}: pixel values must be exact");
    }
}

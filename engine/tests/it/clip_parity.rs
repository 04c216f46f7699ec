//! CLIP image encoder against HF `CLIPModel.get_image_features` on the tiny random CLIP of
//! `engine/tests/fixtures/clip/make_fixtures.py`: pixel values exact, `image_embeds` within
//! 1e-5; a checkpoint with a missing tensor is an error naming it.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use slc_engine::EngineError;
use slc_engine::clip::{ClipVisionConfig, ClipVisionModelWithProjection};
use slc_engine::preprocess::ClipImageProcessor;
use slc_engine::weights::Checkpoint;
use tch::{Device, Kind, Tensor};

use crate::preprocess_parity::{load_fixture_image, tensor_f32};

fn clip_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip")
}

#[test]
fn image_embeds_match_hf_clip() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clip_dir().join("manifest.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(clip_dir().join("reference.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let (pixel_shape, expected_pixels) = tensor_f32(&reference, "pixel_values");
    let (embed_shape, expected_embeds) = tensor_f32(&reference, "image_embeds");

    let checkpoint = clip_dir().join("tiny-clip");
    let processor = ClipImageProcessor::from_model_dir(&checkpoint).unwrap();
    let model = ClipVisionModelWithProjection::load(&checkpoint, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(model.config.projection_dim as usize, embed_shape[1]);

    let mut pixels = Vec::new();
    for file in manifest["images"].as_array().unwrap() {
        let image = load_fixture_image(file.as_str().unwrap());
        pixels.extend(processor.preprocess(&image).unwrap().data);
    }
    assert_eq!(pixels.len(), expected_pixels.len());
    assert!(pixels == expected_pixels, "pixel values must be exact");

    let shape: Vec<i64> = pixel_shape.iter().map(|&d| d as i64).collect();
    let input = Tensor::from_slice(&pixels).view(shape.as_slice());
    let embeds = model.image_embeds(&input).unwrap();
    let ours = Vec::<f32>::try_from(embeds.flatten(0, -1)).unwrap();
    let max_diff = ours
        .iter()
        .zip(&expected_embeds)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("CLIP image_embeds max abs diff vs HF: {max_diff:e}");
    assert!(max_diff <= 1e-5, "image_embeds max abs diff {max_diff}");
}

#[test]
fn config_reads_clip_model_and_vision_layouts() {
    let full = ClipVisionConfig::from_model_dir(&clip_dir().join("tiny-clip")).unwrap();
    assert_eq!(
        (full.hidden_size, full.patch_size, full.projection_dim),
        (32, 8, 16)
    );
    let vision_only = ClipVisionConfig::from_json(
        r#"{"model_type": "clip_vision_model", "hidden_size": 64, "num_attention_heads": 4,
            "projection_dim": 24, "image_size": 336, "patch_size": 14, "layer_norm_eps": 1e-6}"#,
    )
    .unwrap();
    assert_eq!(vision_only.projection_dim, 24);
    assert_eq!(vision_only.layer_norm_eps, 1e-6);
    assert_eq!(vision_only.hidden_act, "quick_gelu");
    assert!(
        ClipVisionConfig::from_json(r#"{"hidden_size": 30, "num_attention_heads": 4}"#).is_err()
    );
}

#[test]
fn a_missing_tensor_is_an_error_that_names_it() {
    let dir = clip_dir().join("tiny-clip");
    let config = ClipVisionConfig::from_model_dir(&dir).unwrap();
    let missing = "vision_model.pre_layrnorm.weight";
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let map = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != missing)
        .map(|(name, view)| {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            (name, Tensor::from_slice(&values).view(shape.as_slice()))
        })
        .collect();
    let checkpoint = Checkpoint::from_tensors(map, Kind::Float, Device::Cpu);
    match ClipVisionModelWithProjection::from_checkpoint(config, &checkpoint) {
        Err(EngineError::MissingTensor { key }) => assert_eq!(key, missing),
        Err(other) => panic!("wrong error {other}"),
        Ok(_) => panic!("loaded without {missing}"),
    }
}

//! Checkpoint loading: every on-disk layout of the fixtures, and the typed errors for a missing
//! or misshapen tensor, a prompt that does not fit, and an unknown dtype or device.

use crate::qwen25vl_parity::{fixture_dir, load};
use slc_engine::EngineError;
use slc_engine::generation::{Decoding, GenerationInput, SamplingParams, generate};
use slc_engine::qwen2_5_vl::config::Qwen25VlConfig;
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn f32_cpu() -> LoadOptions {
    LoadOptions {
        device: Device::Cpu,
        dtype: Kind::Float,
        quant: slc_engine::quant::Quant::None,
    }
}

fn special_ids(dir: &str) -> serde_json::Value {
    let tokenizer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir(dir).join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    tokenizer["added_tokens"].clone()
}

fn token_id(dir: &str, content: &str) -> i64 {
    special_ids(dir)
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["content"] == content)
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[test]
fn every_layout_reads_to_the_same_config() {
    let nested = Qwen25VlConfig::from_file(&fixture_dir("untied").join("config.json")).unwrap();
    let v5 = Qwen25VlConfig::from_file(&fixture_dir("untied-v5").join("config.json")).unwrap();
    let flat =
        Qwen25VlConfig::from_file(&fixture_dir("tied-hub-sharded").join("config.json")).unwrap();
    assert_eq!(nested, v5);
    assert!(!nested.tie_word_embeddings);
    assert!(flat.tie_word_embeddings);
    assert_eq!(flat.text, nested.text);
    assert_eq!(flat.vision, nested.vision);
    assert_eq!(nested.text.mrope_section, vec![2, 3, 3]);
    assert_eq!(nested.vision.fullatt_block_indexes, vec![1]);
    // Special ids come from the checkpoint and agree with its tokenizer.
    for dir in ["untied", "untied-v5", "tied-hub-sharded"] {
        let cfg = Qwen25VlConfig::from_file(&fixture_dir(dir).join("config.json")).unwrap();
        assert_eq!(cfg.image_token_id, token_id(dir, "<|image_pad|>"));
        assert_eq!(cfg.vision_start_token_id, token_id(dir, "<|vision_start|>"));
        assert_eq!(cfg.vision_end_token_id, token_id(dir, "<|vision_end|>"));
    }
}

#[test]
fn the_published_3b_config_reads() {
    let cfg = Qwen25VlConfig::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/qwen2_5_vl_3b_config.json"),
    )
    .unwrap();
    assert_eq!(cfg.text.hidden_size, 2048);
    assert_eq!(cfg.text.num_key_value_heads, 2);
    assert_eq!(cfg.text.mrope_section, vec![16, 24, 24]);
    assert_eq!(cfg.vision.in_channels, 3);
    assert_eq!(cfg.vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
    assert_eq!(cfg.image_token_id, 151655);
    assert!(cfg.tie_word_embeddings);
}

#[test]
fn tied_checkpoint_uses_the_embedding_as_lm_head() {
    let model = load("tied-hub-sharded");
    assert!(
        model
            .lm_head
            .weight
            .dense()
            .unwrap()
            .equal(model.language_model.embed_tokens.dense().unwrap())
    );
    let untied = load("untied");
    assert!(
        !untied
            .lm_head
            .weight
            .dense()
            .unwrap()
            .equal(untied.language_model.embed_tokens.dense().unwrap())
    );
}

/// Copies a checkpoint to a fresh directory with its tensors rewritten by `edit`.
fn edited_copy(name: &str, edit: impl Fn(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let source = fixture_dir(name);
    let target = std::env::temp_dir().join(format!(
        "slc-engine-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(source.join("config.json"), target.join("config.json")).unwrap();
    let mut tensors = Tensor::read_safetensors(source.join("model.safetensors")).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, target.join("model.safetensors")).unwrap();
    target
}

fn load_err(dir: &Path) -> EngineError {
    match Qwen25VlModel::load(dir, f32_cpu()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn a_missing_tensor_is_an_error_naming_the_key() {
    let key = "model.layers.1.self_attn.k_proj.bias";
    let dir = edited_copy("untied", |t| t.retain(|(name, _)| name != key));
    let err = load_err(&dir);
    assert!(matches!(err, EngineError::MissingTensor { .. }), "{err}");
    assert!(err.to_string().contains(key), "{err}");
    std::fs::remove_dir_all(dir).ok();

    let dir = edited_copy("untied", |t| t.retain(|(name, _)| name != "lm_head.weight"));
    let err = load_err(&dir);
    assert!(err.to_string().contains("lm_head.weight"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_misshapen_tensor_is_an_error_naming_the_key() {
    let key = "visual.blocks.2.mlp.up_proj.weight";
    let dir = edited_copy("untied", |t| {
        for (name, tensor) in t.iter_mut() {
            if name == key {
                *tensor = tensor.narrow(0, 0, 5).contiguous();
            }
        }
    });
    let err = load_err(&dir);
    assert!(matches!(err, EngineError::TensorShape { .. }), "{err}");
    assert!(err.to_string().contains(key), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_directory_without_weights_is_a_checkpoint_error() {
    let dir = std::env::temp_dir().join(format!("slc-engine-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture_dir("untied").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    assert!(matches!(load_err(&dir), EngineError::Checkpoint { .. }));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_dtype_and_device_are_typed_errors() {
    assert!(matches!(
        LoadOptions::parse("tpu", None, None),
        Err(EngineError::UnknownDevice(_))
    ));
    assert!(matches!(
        LoadOptions::parse("cpu", Some("int3"), None),
        Err(EngineError::UnknownDtype(_))
    ));
    let cpu = LoadOptions::parse("cpu", None, None).unwrap();
    assert_eq!(cpu.dtype, Kind::Float, "f32 is the CPU default");
    assert_eq!(
        LoadOptions::parse("cpu", Some("bf16"), None).unwrap().dtype,
        Kind::BFloat16
    );
    if !tch::Cuda::is_available() {
        assert!(matches!(
            LoadOptions::parse("cuda", None, None),
            Err(EngineError::DeviceUnavailable(_))
        ));
    } else {
        assert_eq!(
            LoadOptions::parse("cuda", None, None).unwrap().dtype,
            Kind::BFloat16
        );
    }
}

#[test]
fn a_prompt_longer_than_the_context_is_a_typed_error() {
    let model = load("untied");
    let context = model.context_length();
    let ids = vec![1i64; context - 10];
    let input = GenerationInput {
        input_ids: &ids,
        pixel_values: None,
        image_embeds: None,
        grids: &[],
    };
    let params = SamplingParams {
        max_new_tokens: 11,
        ..SamplingParams::default()
    };
    let err = generate(
        &model,
        &input,
        &params,
        Decoding::default(),
        &mut model.new_cache(),
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::PromptTooLong { .. }), "{err}");
    assert!(err.is_client_error());
    let too_long = vec![1i64; context + 1];
    let err = model
        .prefill(&too_long, None, &[], &mut model.new_cache())
        .unwrap_err();
    assert!(matches!(err, EngineError::PromptTooLong { .. }), "{err}");
}

#[test]
fn bf16_loads_and_runs() {
    let model = Qwen25VlModel::load(
        &fixture_dir("untied"),
        LoadOptions {
            device: Device::Cpu,
            dtype: Kind::BFloat16,
            quant: slc_engine::quant::Quant::None,
        },
    )
    .unwrap();
    assert_eq!(model.kind(), Kind::BFloat16);
    let hidden = model
        .forward_tokens(&[1, 2, 3], &mut model.new_cache())
        .unwrap();
    let logits = model.logits(&hidden);
    assert_eq!(logits.kind(), Kind::Float);
    assert_eq!(logits.size(), [3, model.config.text.vocab_size]);
}

/// A copy of a single-file checkpoint whose safetensors header is one byte longer (a trailing
/// space, which the format allows), so every f32 tensor starts off its 4-byte alignment.
fn unaligned_copy(name: &str) -> PathBuf {
    let source = fixture_dir(name);
    let target = std::env::temp_dir().join(format!("slc-engine-unaligned-{}", std::process::id()));
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(source.join("config.json"), target.join("config.json")).unwrap();
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut out = ((header_len + 1) as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&bytes[8..8 + header_len]);
    out.push(b' ');
    out.extend_from_slice(&bytes[8 + header_len..]);
    std::fs::write(target.join("model.safetensors"), out).unwrap();
    target
}

/// The loader's three paths (a mapped view in the stored dtype, a chunked conversion from
/// short-lived mappings, and `pread` for unaligned tensors) give bit-identical models, and
/// using a mapped model leaves the file as it was.
#[test]
fn every_load_path_reads_the_same_weights() {
    let logits = |dir: &Path, dtype: Kind| {
        let options = LoadOptions::dense(Device::Cpu, dtype);
        let model = Qwen25VlModel::load(dir, options).unwrap();
        model.logits(
            &model
                .forward_tokens(&[1, 2, 3, 4], &mut model.new_cache())
                .unwrap(),
        )
    };
    let aligned = fixture_dir("untied");
    let unaligned = unaligned_copy("untied");
    let file = aligned.join("model.safetensors");
    let before = std::fs::read(&file).unwrap();
    for dtype in [Kind::Float, Kind::BFloat16] {
        let ours = logits(&aligned, dtype);
        let read = logits(&unaligned, dtype);
        assert!(ours.equal(&read), "{dtype:?}: the pread path differs");
    }
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the mapped file changed"
    );
    std::fs::remove_dir_all(unaligned).unwrap();
}

/// q/k/v and gate/up are one matrix each, in every precision; each part's weight (what
/// adapters and `check` see) is a view of its rows of it, not a second copy.
#[test]
fn projections_are_fused_and_their_parts_are_views_of_them() {
    for quant in [None, Some("int8"), Some("int4")] {
        let options = LoadOptions::parse("cpu", None, quant).unwrap();
        let model = Qwen25VlModel::load(&fixture_dir("tied-hub-sharded"), options).unwrap();
        let layer = &model.language_model.layers[0];
        for fused in [&layer.self_attn.qkv, &layer.mlp.gate_up] {
            let whole = fused.weight();
            let (rows, cols) = whole.shape();
            assert_eq!(
                rows,
                fused.parts.iter().map(|p| p.out_features()).sum::<i64>()
            );
            let mut at = 0;
            for part in &fused.parts {
                assert_eq!(part.weight.shape().1, cols);
                assert_eq!(part.weight.quant(), whole.quant(), "{quant:?}");
                let expected = whole.narrow_rows(at, part.out_features());
                assert!(
                    part.weight
                        .dequantize_fresh()
                        .equal(&expected.dequantize_fresh()),
                    "{quant:?}: a part is its rows of the fused matrix"
                );
                if let (Some(view), Some(base)) = (part.weight.dense(), whole.dense()) {
                    let offset = at * cols * base.kind().elt_size_in_bytes() as i64;
                    assert_eq!(view.data_ptr() as i64, base.data_ptr() as i64 + offset);
                }
                at += part.out_features();
            }
        }
    }
}

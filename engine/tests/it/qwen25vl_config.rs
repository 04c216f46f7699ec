//! `config.json` through serde: omitted fields take transformers 4.57.6's defaults, both
//! spellings of a vision field in one file are read (the current one wins), `null` is absent,
//! and an unsupported value is an error that names its field.

use serde_json::{Value, json};
use slc_engine::nn::Activation;
use slc_engine::qwen2_5_vl::config::Qwen25VlConfig;

fn published_3b() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/qwen2_5_vl_3b_config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config_error(config: &Value) -> String {
    match Qwen25VlConfig::from_value(config) {
        Ok(_) => panic!("{config} read although it is not supported"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn omitted_fields_take_the_defaults_of_transformers() {
    let minimal = json!({
        "vocab_size": 100, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 8,
        "max_position_embeddings": null,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vision_config": {"hidden_size": 32, "num_heads": 2, "out_hidden_size": 128},
    });
    let config = Qwen25VlConfig::from_value(&minimal).unwrap();
    // What `Qwen2_5_VLConfig(vision_config={...}, **minimal)` of transformers 4.57.6 holds.
    let text = &config.text;
    assert_eq!(text.num_key_value_heads, 8);
    assert_eq!(text.max_position_embeddings, 32768, "null is absent");
    assert_eq!(text.rms_norm_eps, 1e-5);
    assert_eq!(text.rope_theta, 1e6);
    assert_eq!(text.hidden_act, Activation::Silu);
    assert!(!config.tie_word_embeddings);
    let vision = &config.vision;
    assert_eq!(
        (
            vision.depth,
            vision.intermediate_size,
            vision.in_channels,
            vision.patch_size
        ),
        (32, 3420, 3, 14)
    );
    assert_eq!(
        (
            vision.temporal_patch_size,
            vision.spatial_merge_size,
            vision.window_size
        ),
        (2, 2, 112)
    );
    assert_eq!(vision.fullatt_block_indexes, [7, 15, 23, 31]);
    assert_eq!(vision.tokens_per_second, 4.0);
    assert_eq!(
        (config.image_token_id, config.video_token_id),
        (151655, 151656)
    );
    assert_eq!(
        (config.vision_start_token_id, config.vision_end_token_id),
        (151652, 151653)
    );
}

#[test]
fn both_spellings_of_a_vision_field_read_with_the_current_one_winning() {
    // transformers 4.57 re-saves the hub's `in_chans` next to its own `in_channels`.
    let mut resaved = published_3b();
    resaved["vision_config"]["in_channels"] = json!(3);
    resaved["vision_config"]["embed_dim"] = json!(999);
    let config = Qwen25VlConfig::from_value(&resaved).unwrap();
    assert_eq!(config.vision.in_channels, 3);
    assert_eq!(
        config.vision.hidden_size, 1280,
        "hidden_size wins over embed_dim"
    );
    let mut older = published_3b();
    older["vision_config"]["patch_size"] = Value::Null;
    older["vision_config"]["spatial_patch_size"] = json!(16);
    older["vision_config"]["in_chans"] = json!(4);
    let config = Qwen25VlConfig::from_value(&older).unwrap();
    assert_eq!(
        (config.vision.patch_size, config.vision.in_channels),
        (16, 4)
    );
}

#[test]
fn unsupported_values_are_errors_naming_the_field() {
    let mut gelu = published_3b();
    gelu["vision_config"]["hidden_act"] = json!("gelu");
    let message = config_error(&gelu);
    assert!(
        message.contains("vision_config.hidden_act") && message.contains("gelu"),
        "{message}"
    );
    let mut yarn = published_3b();
    yarn["rope_scaling"]["type"] = json!("yarn");
    let message = config_error(&yarn);
    assert!(
        message.contains("rope_scaling.type") && message.contains("yarn"),
        "{message}"
    );
    let mut text_depth = published_3b();
    text_depth["vision_config"]["depth"] = json!("32");
    let message = config_error(&text_depth);
    assert!(message.contains("vision_config.depth"), "{message}");
    let mut missing = published_3b();
    missing.as_object_mut().unwrap().remove("vocab_size");
    let message = config_error(&missing);
    assert!(message.contains("vocab_size"), "{message}");
    let mut no_mrope = published_3b();
    no_mrope.as_object_mut().unwrap().remove("rope_scaling");
    assert!(config_error(&no_mrope).contains("mrope_section"));
}

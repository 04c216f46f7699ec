//! Prefix KV reuse gives the same logits and tokens as a full prefill (within 1e-5), reuses
//! exactly the shared prefix, and never reuses image positions of a different image.

use slc_engine::chat::{ChatMessage, ContentPart};
use slc_engine::generation::{GenerationOutput, SamplingParams};
use slc_engine::pipeline::{EncodedImage, VlmPipeline};
use slc_engine::prefix_cache::{PrefixCache, prompt_keys};
use slc_engine::preprocess::{DecodeLimits, PixelBudget, decode_rgb};
use slc_engine::qwen2_5_vl::{KvCache, LoadOptions};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn encode(pipeline: &VlmPipeline, path: PathBuf) -> EncodedImage {
    let image = decode_rgb(&std::fs::read(path).unwrap(), DecodeLimits::default()).unwrap();
    pipeline
        .encode_image(&image, PixelBudget::default())
        .unwrap()
}

fn prompt(pipeline: &VlmPipeline, image: &EncodedImage, question: &str) -> Vec<i64> {
    let messages = vec![
        ChatMessage::system("You are a careful verifier. Answer each question with yes or no."),
        ChatMessage::user(vec![ContentPart::Image, ContentPart::Text(question.into())]),
    ];
    pipeline.render(&messages, &[image.tokens]).unwrap()
}

fn run(
    pipeline: &VlmPipeline,
    ids: &[i64],
    image: &EncodedImage,
    cache: &mut KvCache,
) -> GenerationOutput {
    let params = SamplingParams {
        max_new_tokens: 6,
        ..SamplingParams::default()
    };
    pipeline
        .generate_encoded(ids, &[image], &params, None, None, cache)
        .unwrap()
}

#[test]
fn reused_prefixes_give_the_logits_of_a_full_prefill() {
    let pipeline = VlmPipeline::load(
        &fixtures().join("qwen25vl/untied"),
        LoadOptions::parse("cpu", None, None).unwrap(),
    )
    .unwrap();
    let image_token = pipeline.model.config.image_token_id;
    let photo = encode(&pipeline, fixtures().join("qwen25vl/photo-bo-0.jpg"));
    let other = encode(
        &pipeline,
        fixtures().join("preprocess/images/bo_test_0.jpg"),
    );
    let mut store = PrefixCache::new(64 << 20);

    let first = prompt(
        &pipeline,
        &photo,
        "Q1. Do you see <bo> at the center? (yes or no)",
    );
    let mut cache = pipeline.model.new_cache();
    run(&pipeline, &first, &photo, &mut cache);
    store.insert("base", prompt_keys(&first, image_token, &["photo"]), &cache);

    // Same system prompt and image, another question: everything up to the question is reused.
    let second = prompt(&pipeline, &photo, "Q2. Is <bo> on the sofa? (yes or no)");
    let shared = first
        .iter()
        .zip(&second)
        .take_while(|(a, b)| a == b)
        .count();
    let hit = store
        .lookup("base", &prompt_keys(&second, image_token, &["photo"]))
        .unwrap();
    assert_eq!(hit.len, shared);
    assert!(
        shared > photo.tokens,
        "the image is inside the reused prefix"
    );
    let mut reused_cache = hit.cache;
    let reused = run(&pipeline, &second, &photo, &mut reused_cache);
    let full = run(&pipeline, &second, &photo, &mut pipeline.model.new_cache());
    assert_eq!(reused.usage.reused_prompt_tokens, shared);
    assert_eq!(full.usage.reused_prompt_tokens, 0);
    assert_eq!(reused.token_ids, full.token_ids);
    let diff = (reused.first_logits.unwrap() - full.first_logits.unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-5, "logits differ by {diff}");

    // Another image: reuse stops before its first pad.
    let third = prompt(
        &pipeline,
        &other,
        "Q1. Do you see <bo> at the center? (yes or no)",
    );
    let keys = prompt_keys(&third, image_token, &["other"]);
    let first_pad = third.iter().position(|&id| id == image_token).unwrap();
    let hit = store.lookup("base", &keys).unwrap();
    assert!(hit.len <= first_pad, "{} > {first_pad}", hit.len);
    let mut reused_cache = hit.cache;
    let reused = run(&pipeline, &third, &other, &mut reused_cache);
    let full = run(&pipeline, &third, &other, &mut pipeline.model.new_cache());
    let diff = (reused.first_logits.unwrap() - full.first_logits.unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-5, "logits differ by {diff}");

    // The same pixels under another name (a different image hash) reuse nothing of the image.
    let keys = prompt_keys(&second, image_token, &["renamed"]);
    let first_pad = second.iter().position(|&id| id == image_token).unwrap();
    assert!(store.lookup("base", &keys).unwrap().len <= first_pad);
}

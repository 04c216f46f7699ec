//! The text callback of the generation loop (streaming and cancellation), stop strings, and
//! generation from separately encoded images, on the tiny untied checkpoint.

use slc_engine::chat::{ChatMessage, ContentPart};
use slc_engine::generation::{FinishReason, SamplingParams};
use slc_engine::pipeline::VlmPipeline;
use slc_engine::preprocess::{DecodeLimits, PixelBudget, decode_rgb};
use slc_engine::qwen2_5_vl::LoadOptions;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen25vl")
}

fn pipeline() -> VlmPipeline {
    VlmPipeline::load(
        &fixtures().join("untied"),
        LoadOptions::parse("cpu", None, None).unwrap(),
    )
    .unwrap()
}

fn image_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("photo-bo-0.jpg")).unwrap()
}

fn messages() -> Vec<ChatMessage> {
    vec![ChatMessage::user(vec![
        ContentPart::Image,
        ContentPart::Text("Describe the image.".into()),
    ])]
}

fn params(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_new_tokens,
        ..SamplingParams::default()
    }
}

/// Runs from encoded images with a callback that collects pieces and may stop after `stop_after`.
fn run_streaming(
    pipeline: &VlmPipeline,
    params: &SamplingParams,
    stop_after: Option<usize>,
) -> (slc_engine::generation::GenerationOutput, Vec<String>) {
    let image = decode_rgb(&image_bytes(), DecodeLimits::default()).unwrap();
    let encoded = pipeline
        .encode_image(&image, PixelBudget::default())
        .unwrap();
    let ids = pipeline.render(&messages(), &[encoded.tokens]).unwrap();
    let mut pieces = Vec::new();
    let mut on_text = |piece: &str| {
        pieces.push(piece.to_string());
        stop_after.is_none_or(|n| pieces.len() < n)
    };
    let output = pipeline
        .generate_encoded(
            &ids,
            &[&encoded],
            params,
            None,
            Some(&mut on_text),
            &mut pipeline.model.new_cache(),
        )
        .unwrap();
    (output, pieces)
}

#[test]
fn encoded_images_give_the_same_generation_as_pixel_values() {
    let pipeline = pipeline();
    let prompt = pipeline
        .prepare(
            &messages(),
            &[&image_bytes()],
            DecodeLimits::default(),
            PixelBudget::default(),
        )
        .unwrap();
    let direct = pipeline.generate(&prompt, &params(12), None).unwrap();
    let (streamed, _) = run_streaming(&pipeline, &params(12), None);
    assert_eq!(streamed.token_ids, direct.token_ids);
    assert_eq!(streamed.usage.prompt_tokens, prompt.input_ids.len());
    let diff = (streamed.first_logits.unwrap() - direct.first_logits.unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-5, "first logits differ by {diff}");
}

#[test]
fn streamed_pieces_concatenate_to_the_text() {
    let pipeline = pipeline();
    let (output, pieces) = run_streaming(&pipeline, &params(16), None);
    assert!(
        !output.text.is_empty(),
        "the tiny model should say something"
    );
    assert!(pieces.len() > 1, "text should arrive in several pieces");
    assert_eq!(pieces.concat(), output.text);
    assert!(output.timings.first_token_ms > 0.0);
}

#[test]
fn a_callback_returning_false_cancels() {
    let pipeline = pipeline();
    let (output, pieces) = run_streaming(&pipeline, &params(16), Some(1));
    assert_eq!(output.finish_reason, FinishReason::Cancelled);
    assert_eq!(pieces.len(), 1);
    assert!(output.usage.completion_tokens < 16);
}

#[test]
fn stop_strings_cut_the_text_and_are_never_streamed() {
    let pipeline = pipeline();
    let (free, _) = run_streaming(&pipeline, &params(16), None);
    // A stop string from the middle of what the model says freely.
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() >= 4, "need some text, got {:?}", free.text);
    let start = chars.len() / 2;
    let stop: String = chars[start..(start + 2).min(chars.len())].iter().collect();
    let cut = free.text.find(&stop).unwrap();
    let with_stop = SamplingParams {
        stop_strings: vec![stop.clone()],
        ..params(16)
    };
    let (output, pieces) = run_streaming(&pipeline, &with_stop, None);
    assert_eq!(output.finish_reason, FinishReason::Stop);
    assert_eq!(output.text, free.text[..cut]);
    assert_eq!(pieces.concat(), output.text);
    assert!(!pieces.concat().contains(&stop));
}

//! The model a service worker owns (`slc_engine::serving`): adapter names validated once,
//! before any tensor work (issue 14's 200,000-member mix is a typed client error), a mix named
//! in any order is one adapter sharing one prefix namespace, and the vision-encoder cache is
//! keyed by the adapter only when that adapter changes the vision tower.

use crate::lora_parity::lora_fixture;
use crate::qwen25vl_parity::fixture_dir;
use slc_engine::EngineError;
use slc_engine::chat::{ChatMessage, ContentPart};
use slc_engine::generation::SamplingParams;
use slc_engine::lora::{ActiveAdapter, AdapterBank, AdapterNameError, ClipModelId, LoraAdapter};
use slc_engine::pipeline::VlmPipeline;
use slc_engine::preprocess::{DecodeLimits, decode_rgb};
use slc_engine::qwen2_5_vl::LoadOptions;
use slc_engine::serving::{CacheBounds, ServedImage, ServedOutput, ServedRequest, ServingModel};
use std::path::PathBuf;

const BOUNDS: CacheBounds = CacheBounds {
    vision_bytes: 64 << 20,
    prefix_bytes: 64 << 20,
};

fn pipeline() -> VlmPipeline {
    VlmPipeline::load(
        &fixture_dir("untied"),
        LoadOptions::parse("cpu", None, None).unwrap(),
    )
    .unwrap()
}

fn with_bank() -> ServingModel {
    let mut pipeline = pipeline();
    let clip_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tiny-clip");
    let clip = ClipModelId::from_clip_dir(&clip_dir).unwrap();
    let bank = AdapterBank::load(&lora_fixture("bank"), &mut pipeline.model, &clip).unwrap();
    let adapters = ActiveAdapter::from_bank(bank, &mut pipeline.model, false).unwrap();
    ServingModel::new(pipeline, adapters, BOUNDS)
}

fn ask(
    model: &mut ServingModel,
    adapter: Option<&str>,
    images: &[ServedImage],
) -> slc_engine::Result<ServedOutput> {
    let mut content: Vec<ContentPart> = images.iter().map(|_| ContentPart::Image).collect();
    content.push(ContentPart::Text("Who is this?".into()));
    let messages = [ChatMessage::user(content)];
    let params = SamplingParams {
        max_new_tokens: 4,
        ..SamplingParams::default()
    };
    let request = ServedRequest {
        messages: &messages,
        images,
        params: &params,
        json_schema: None,
        adapter,
    };
    model.generate(&request, None)
}

#[test]
fn adapter_names_are_validated_once_and_mixes_are_canonical() {
    let mut model = with_bank();
    assert_eq!(model.adapter_names(), ["bo", "brown-duck", "dug"]);
    let mixed = ask(&mut model, Some("bo+dug"), &[]).unwrap();
    let repeated = vec!["dug"; 200_000].join("+");
    let error = ask(&mut model, Some(&repeated), &[]).unwrap_err();
    assert!(
        matches!(
            error,
            EngineError::AdapterName(AdapterNameError::TooManyMembers {
                members: 200_000,
                bank: 3
            })
        ),
        "{error}"
    );
    assert!(error.is_client_error());
    let error = ask(&mut model, Some("dug+nope"), &[]).unwrap_err();
    assert!(
        matches!(&error, EngineError::AdapterName(AdapterNameError::Unknown { member }) if member == "nope"),
        "{error}"
    );
    // The same mix named the other way round: no second mix, the same tokens, and the prefix
    // stored under the first spelling is reused (everything but the last prompt position).
    let reordered = ask(&mut model, Some("dug+bo"), &[]).unwrap();
    assert_eq!(reordered.generation.token_ids, mixed.generation.token_ids);
    let usage = &reordered.generation.usage;
    assert_eq!(usage.reused_prompt_tokens, usage.prompt_tokens - 1);
    let base = ask(&mut model, None, &[]).unwrap();
    assert_eq!(
        base.generation.usage.reused_prompt_tokens, 0,
        "the base model is its own namespace"
    );
    let duplicated = ask(&mut model, Some("dug+dug"), &[]).unwrap();
    let single = ask(&mut model, Some("dug"), &[]).unwrap();
    assert_eq!(duplicated.generation.token_ids, single.generation.token_ids);
    assert_eq!(
        single.generation.usage.reused_prompt_tokens,
        single.generation.usage.prompt_tokens - 1,
        "`dug+dug` is `dug`"
    );
}

#[test]
fn refused_names_leave_the_active_adapter_alone() {
    let mut pipeline = pipeline();
    let clip_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tiny-clip");
    let clip = ClipModelId::from_clip_dir(&clip_dir).unwrap();
    let bank = AdapterBank::load(&lora_fixture("bank"), &mut pipeline.model, &clip).unwrap();
    let mut active = ActiveAdapter::from_bank(bank, &mut pipeline.model, false).unwrap();
    active.select(&mut pipeline.model, Some("dug+bo")).unwrap();
    assert_eq!(active.built_mixes(), 1);
    let repeated = vec!["bo"; 200_000].join("+");
    assert!(active.select(&mut pipeline.model, Some(&repeated)).is_err());
    assert!(active.select(&mut pipeline.model, Some("bo+nope")).is_err());
    assert_eq!(active.attached().unwrap().name(), "bo+dug");
    assert_eq!(
        active.built_mixes(),
        1,
        "nothing averaged for a refused name"
    );
    active
        .select(&mut pipeline.model, Some("brown-duck+bo"))
        .unwrap();
    active.select(&mut pipeline.model, Some("bo+dug")).unwrap();
    assert_eq!(
        active.built_mixes(),
        2,
        "a mix seen before is not averaged again"
    );
}

#[test]
fn the_vision_cache_is_per_adapter_only_for_adapters_of_the_vision_tower() {
    let pipeline = pipeline();
    let vision = LoraAdapter::load(&lora_fixture("text-and-vision-mlp"), &pipeline.model).unwrap();
    let text_only = LoraAdapter::load(&lora_fixture("bank/adapters/bo"), &pipeline.model).unwrap();
    assert!(vision.targets_vision() && !text_only.targets_vision());
    let adapters =
        ActiveAdapter::from_adapters(vec![("vision".into(), vision), ("text".into(), text_only)]);
    let mut model = ServingModel::new(pipeline, adapters, BOUNDS);
    let bytes = std::fs::read(fixture_dir("photo-bo-0.jpg")).unwrap();
    let rgb = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
    let image = [ServedImage {
        content_id: "photo",
        rgb: &rgb,
    }];
    let counts = |output: ServedOutput| (output.vision_encodes, output.vision_cache_hits);
    assert_eq!(counts(ask(&mut model, None, &image).unwrap()), (1, 0));
    assert_eq!(
        counts(ask(&mut model, Some("text"), &image).unwrap()),
        (0, 1)
    );
    assert_eq!(
        counts(ask(&mut model, Some("vision"), &image).unwrap()),
        (1, 0)
    );
    assert_eq!(
        counts(ask(&mut model, Some("vision"), &image).unwrap()),
        (0, 1)
    );
}

//! Parity of the Qwen2.5-VL model with Hugging Face transformers on the tiny random-weight
//! checkpoints of `tests/fixtures/qwen25vl` (written by `make_fixtures.py` with transformers
//! 4.57.6 in f32): full-prompt logits within 1e-4 and 32 greedy tokens identical, for one image,
//! two images and a text-only prompt, on every on-disk layout.

use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qwen25vl")
        .join(name)
}

pub fn references() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture_dir("references.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

pub fn load(name: &str) -> Qwen25VlModel {
    let options = LoadOptions {
        device: Device::Cpu,
        dtype: Kind::Float,
        quant: slc_engine::quant::Quant::None,
    };
    Qwen25VlModel::load(&fixture_dir(name), options).unwrap()
}

fn ids(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

fn grid(t: &Tensor) -> [i64; 3] {
    let v = ids(t);
    [v[0], v[1], v[2]]
}

/// The inputs of a reference prompt: ids, pixel values and grids.
pub fn prompt(
    refs: &HashMap<String, Tensor>,
    name: &str,
) -> (Vec<i64>, Option<Tensor>, Vec<[i64; 3]>) {
    let input_ids = ids(&refs[&format!("input_ids_{name}")]);
    match name {
        "one_image" => (
            input_ids,
            Some(refs["pixel_values_a"].shallow_clone()),
            vec![grid(&refs["grid_a"])],
        ),
        "two_images" => (
            input_ids,
            Some(Tensor::cat(
                &[&refs["pixel_values_a"], &refs["pixel_values_b"]],
                0,
            )),
            vec![grid(&refs["grid_a"]), grid(&refs["grid_b"])],
        ),
        _ => (input_ids, None, vec![]),
    }
}

fn full_prompt_logits(model: &Qwen25VlModel, refs: &HashMap<String, Tensor>, name: &str) -> Tensor {
    let (input_ids, pixels, grids) = prompt(refs, name);
    let embeds = pixels.map(|p| model.encode_images(&p, &grids).unwrap());
    let mut cache = model.new_cache();
    let hidden = model
        .prefill(&input_ids, embeds.as_ref(), &grids, &mut cache)
        .unwrap();
    model.logits(&hidden)
}

fn assert_logits_close(model_dir: &str, reference: &str, prompt_name: &str) {
    let refs = references();
    let model = load(model_dir);
    let ours = full_prompt_logits(&model, &refs, prompt_name);
    let theirs = &refs[&format!("logits_{reference}_{prompt_name}")];
    assert_eq!(ours.size(), theirs.size());
    let diff = (ours - theirs).abs().max().double_value(&[]);
    assert!(
        diff <= 1e-4,
        "{model_dir}/{prompt_name}: max abs logit diff {diff} > 1e-4"
    );
}

#[test]
fn logits_match_hf_one_image_untied() {
    assert_logits_close("untied", "untied", "one_image");
}

#[test]
fn logits_match_hf_two_images_untied() {
    assert_logits_close("untied", "untied", "two_images");
}

#[test]
fn logits_match_hf_text_only_untied() {
    assert_logits_close("untied", "untied", "text_only");
}

#[test]
fn logits_match_hf_one_image_tied_hub_sharded() {
    assert_logits_close("tied-hub-sharded", "tied", "one_image");
}

#[test]
fn logits_match_hf_transformers5_layout() {
    assert_logits_close("untied-v5", "untied", "one_image");
    assert_logits_close("untied-v5", "untied", "two_images");
}

/// 32 greedy tokens of `model` (loaded from `model_dir`) on a reference prompt, with the
/// checkpoint's eos ids as stops; the output and the cache it left.
pub fn greedy_output(
    model: &Qwen25VlModel,
    model_dir: &str,
    prompt_name: &str,
) -> (
    slc_engine::generation::GenerationOutput,
    slc_engine::qwen2_5_vl::KvCache,
) {
    use slc_engine::generation::{Decoding, GenerationInput, SamplingParams, generate};
    use slc_engine::qwen2_5_vl::eos_token_ids;
    let (input_ids, pixels, grids) = prompt(&references(), prompt_name);
    let params = SamplingParams {
        max_new_tokens: 32,
        stop_token_ids: eos_token_ids(&fixture_dir(model_dir)).unwrap(),
        ..SamplingParams::default()
    };
    assert!(!params.stop_token_ids.is_empty());
    let input = GenerationInput {
        input_ids: &input_ids,
        pixel_values: pixels.as_ref(),
        image_embeds: None,
        grids: &grids,
    };
    let mut cache = model.new_cache();
    let out = generate(model, &input, &params, Decoding::default(), &mut cache).unwrap();
    (out, cache)
}

fn greedy(model_dir: &str, reference: &str, prompt_name: &str) {
    let refs = references();
    let model = load(model_dir);
    let (input_ids, _, _) = prompt(&refs, prompt_name);
    let (out, cache) = greedy_output(&model, model_dir, prompt_name);
    let expected = ids(&refs[&format!("greedy_{reference}_{prompt_name}")]);
    assert_eq!(out.token_ids, expected, "{model_dir}/{prompt_name}");
    assert_eq!(out.usage.completion_tokens, 32);
    assert_eq!(
        out.usage.decode_steps, 31,
        "one forward per token after the prefill"
    );
    assert_eq!(cache.len as usize, input_ids.len() + 31);
}

#[test]
fn greedy_tokens_match_hf_one_image() {
    greedy("untied", "untied", "one_image");
}

#[test]
fn greedy_tokens_match_hf_two_images() {
    greedy("untied", "untied", "two_images");
}

#[test]
fn greedy_tokens_match_hf_text_only() {
    greedy("untied", "untied", "text_only");
}

#[test]
fn greedy_tokens_match_hf_tied_hub_sharded() {
    greedy("tied-hub-sharded", "tied", "one_image");
}

/// Several tokens fed at once after a cached prefix (jump-forward, prefix reuse) give the same
/// logits as the full prompt at once, and a cloned, truncated cache can be reused.
#[test]
fn multi_token_steps_and_cache_reuse_match_full_prefill() {
    let refs = references();
    let model = load("untied");
    let (input_ids, pixels, grids) = prompt(&refs, "one_image");
    let embeds = model.encode_images(&pixels.unwrap(), &grids).unwrap();
    let mut full = model.new_cache();
    let all = model.logits(
        &model
            .prefill(&input_ids, Some(&embeds), &grids, &mut full)
            .unwrap(),
    );
    // Prefill the prompt, then feed 3 more text tokens in one step.
    let extra = [5i64, 17, 42];
    let mut cache = model.new_cache();
    let _prompt_hidden = model
        .prefill(&input_ids, Some(&embeds), &grids, &mut cache)
        .unwrap();
    let snapshot = cache.clone();
    let stepped = model.logits(&model.forward_tokens(&extra, &mut cache).unwrap());
    // Reference for the same 3 tokens: one at a time from the snapshot.
    let mut one_by_one = snapshot.clone();
    let mut rows = Vec::new();
    for token in extra {
        rows.push(model.logits(&model.forward_tokens(&[token], &mut one_by_one).unwrap()));
    }
    let one_by_one = Tensor::cat(&rows, 0);
    let diff = (&stepped - &one_by_one).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "multi-token step differs by {diff}");
    // Truncating back to the prompt and feeding again reproduces the same logits.
    cache.truncate(input_ids.len() as i64);
    let again = model.logits(&model.forward_tokens(&extra, &mut cache).unwrap());
    assert!((&again - &stepped).abs().max().double_value(&[]) <= 1e-6);
    // And the full prefill's last logits agree with the HF reference (sanity of the snapshot).
    let theirs = &refs["logits_untied_one_image"];
    assert!((all - theirs).abs().max().double_value(&[]) <= 1e-4);
}

//! Weight-only int8/int4 quantization (`slc_engine::quant`): each kernel path against the
//! dequantized matrix it stands for, the streaming quantizer against a whole-matrix one, and
//! the quantized model against the f32 one on the tiny fixtures.

use crate::lora_bank::tiny_clip_id;
use crate::lora_parity::lora_fixture;
use crate::qwen25vl_parity::fixture_dir;
use slc_engine::lora::adapter::LoraAdapter;
use slc_engine::lora::apply::{attach_adapter, merge_adapter};
use slc_engine::lora::{ActiveAdapter, AdapterBank};
use slc_engine::quant::{KERNEL_MAX_ROWS, Quant, Weight};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use tch::{Kind, Tensor};

fn random_matrix(rows: i64, cols: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    // A few large outliers, as trained weights have, so the scales are not all alike.
    Tensor::randn([rows, cols], (Kind::Float, tch::Device::Cpu)) * 0.05
        + Tensor::randn([rows, 1], (Kind::Float, tch::Device::Cpu)).abs() * 0.02
}

fn quantize(quant: Quant, w: &Tensor, chunk: i64) -> Weight {
    let (rows, cols) = (w.size()[0], w.size()[1]);
    Weight::quantize_in_chunks(quant, rows, cols, chunk, |start, count| {
        Ok(w.narrow(0, start, count))
    })
    .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn quantized_weights_round_each_value_to_within_half_a_step() {
    let w = random_matrix(256, 384, 1);
    let int8 = quantize(Quant::Int8, &w, 1 << 20).dequantize_fresh();
    // The step is the bf16-rounded scale, up to 2^-8 above amax / 127.
    let row_step = w.abs().amax([1], true) / 127.0 * (1.0 + 1.0 / 256.0);
    let excess = ((&int8.to_kind(Kind::Float) - &w).abs() - &row_step * 0.5 - w.abs() * 0.004)
        .max()
        .double_value(&[]);
    assert!(excess <= 0.0, "int8 error exceeds half a step by {excess}");

    let int4 = quantize(Quant::Int4, &w, 1 << 20);
    let Weight::Int4(inner) = &int4 else {
        panic!("256 x 384 fits int4")
    };
    assert_eq!(inner.group(), 32);
    let grouped = w.view([256, 12, 32]);
    let group_step = (grouped.amax([2], true) - grouped.amin([2], true)) / 15.0;
    let error = (int4
        .dequantize_fresh()
        .to_kind(Kind::Float)
        .view([256, 12, 32])
        - &grouped)
        .abs();
    // Scale and zero are bf16: the grid itself is off by up to 2^-9 of the zero (about the
    // group's midpoint) plus 8 x 2^-9 of the step.
    let grid = grouped.abs().amax([2], true) / 512.0;
    let excess = (error - group_step * (0.5 + 8.0 / 512.0) - grid - grouped.abs() * 0.008)
        .max()
        .double_value(&[]);
    assert!(excess <= 0.0, "int4 error exceeds half a step by {excess}");
}

#[test]
fn streaming_quantization_equals_quantizing_the_whole_matrix() {
    let w = random_matrix(320, 128, 2);
    for quant in [Quant::Int8, Quant::Int4] {
        let whole = quantize(quant, &w, 1 << 20).dequantize_fresh();
        // 64 rows at a time: five slices for int8, five int4 packing blocks.
        let sliced = quantize(quant, &w, 64).dequantize_fresh();
        assert!(whole.equal(&sliced), "{quant:?}");
    }
}

/// Few rows take the weight-only kernel, many the dequantize + bf16 GEMM path, a grad-tracking
/// input the differentiable path: all three compute `x · dequantize(W)^T + b`.
#[test]
fn every_kernel_path_computes_the_dequantized_product() {
    let w = random_matrix(192, 256, 3);
    let bias = Tensor::randn([192], (Kind::Float, tch::Device::Cpu)).to_kind(Kind::BFloat16);
    for quant in [Quant::Int8, Quant::Int4] {
        let q = quantize(quant, &w, 1 << 20);
        let reference_weight = q.dequantize_fresh().to_kind(Kind::Float);
        for rows in [1, 3, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1, 100] {
            let x = Tensor::randn([1, rows, 256], (Kind::Float, tch::Device::Cpu))
                .to_kind(Kind::BFloat16);
            let expected = x
                .to_kind(Kind::Float)
                .linear(&reference_weight, Some(&bias.to_kind(Kind::Float)));
            let y = q.linear(&x, Some(&bias));
            assert_eq!(y.size(), [1, rows, 192]);
            assert_eq!(y.kind(), Kind::BFloat16);
            // bf16 output: half an ulp of values around 1-10 is ~0.03.
            let diff = max_diff(&y, &expected);
            let scale = expected.abs().max().double_value(&[]);
            assert!(
                diff <= 0.01 * scale,
                "{quant:?} rows {rows}: {diff} of {scale}"
            );
        }
        let x = Tensor::randn([4, 256], (Kind::Float, tch::Device::Cpu))
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let y = q.linear(&x, None);
        y.sum(Kind::Float).backward();
        let expected_grad = reference_weight.sum_dim_intlist(0, false, Kind::Float);
        assert!(
            max_diff(&x.grad().get(0), &expected_grad) < 0.05,
            "{quant:?} grad"
        );
    }
}

#[test]
fn quantized_rows_are_the_dequantized_matrix_rows() {
    let w = random_matrix(256, 64, 4);
    let ids = Tensor::from_slice(&[0i64, 31, 32, 63, 64, 200, 255, 5]);
    for quant in [Quant::Int8, Quant::Int4] {
        let q = quantize(quant, &w, 1 << 20);
        assert!(
            q.rows(&ids)
                .equal(&q.dequantize_fresh().index_select(0, &ids)),
            "{quant:?}"
        );
    }
}

#[test]
fn layers_the_int4_kernel_cannot_pack_fall_back_to_int8() {
    let odd_rows = random_matrix(681, 64, 5);
    assert_eq!(
        quantize(Quant::Int4, &odd_rows, 1 << 20).quant(),
        Quant::Int8
    );
    let narrow_input = random_matrix(64, 48, 5);
    assert_eq!(
        quantize(Quant::Int4, &narrow_input, 1 << 20).quant(),
        Quant::Int8
    );
    assert_eq!(
        quantize(Quant::Int4, &random_matrix(64, 96, 5), 1 << 20).quant(),
        Quant::Int4
    );
}

fn load(name: &str, quant: &str) -> Qwen25VlModel {
    let options = LoadOptions::parse("cpu", None, Some(quant)).unwrap();
    Qwen25VlModel::load(&fixture_dir(name), options).unwrap()
}

/// Logits [n, vocab] of a plain token prompt, prefilled in one pass.
fn prompt_logits(model: &Qwen25VlModel, ids: &[i64]) -> Tensor {
    let hidden = model
        .prefill(ids, None, &[], &mut model.new_cache())
        .unwrap();
    model.logits(&hidden)
}

fn prompt() -> Vec<i64> {
    (0..48).map(|i| (i * 37 + 11) % 600).collect()
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
    ((&a * &b).sum(Kind::Float) / (a.norm() * b.norm())).double_value(&[])
}

#[test]
fn quantized_models_follow_the_f32_model() {
    for name in ["tied-hub-sharded", "untied"] {
        let reference = prompt_logits(&load(name, "none"), &prompt());
        // Measured on these tiny random models (hidden 64): int8 0.999+, int4 0.97. Random
        // weights have no structure for groups to exploit, so int4 is the harsher case here.
        for (quant, at_least) in [("int8", 0.999), ("int4", 0.95)] {
            let model = load(name, quant);
            assert_eq!(model.kind(), Kind::BFloat16);
            let quantized = model.language_model.layers[0]
                .mlp
                .gate_proj()
                .weight
                .quant();
            assert_eq!(quantized.name(), quant, "{name}");
            assert!(
                model.visual.blocks[0]
                    .mlp
                    .up_proj()
                    .weight
                    .dense()
                    .is_some()
            );
            let logits = prompt_logits(&model, &prompt());
            let similarity = cosine(&logits, &reference);
            assert!(
                similarity >= at_least,
                "{name} {quant}: cosine {similarity}"
            );
        }
    }
}

/// A prompt of more than `KERNEL_MAX_ROWS` tokens prefills on the dequantized path; decoding
/// the same tokens one at a time uses the kernels. Both give the same logits up to bf16
/// rounding, as the two paths of the dense bf16 model do (measured: cosine 0.99999, top-1
/// agreement 98% dense, 94-96% quantized on near-tied random logits).
#[test]
fn prefill_and_decode_paths_agree_on_a_quantized_model() {
    for quant in ["bf16", "int8", "int4"] {
        let model = if quant == "bf16" {
            Qwen25VlModel::load(
                &fixture_dir("tied-hub-sharded"),
                LoadOptions::parse("cpu", Some("bf16"), None).unwrap(),
            )
            .unwrap()
        } else {
            load("tied-hub-sharded", quant)
        };
        let ids = prompt();
        let prefilled = prompt_logits(&model, &ids);
        let mut cache = model.new_cache();
        let first = model.prefill(&ids[..1], None, &[], &mut cache).unwrap();
        let mut stepped = vec![model.logits(&first)];
        for id in &ids[1..] {
            stepped.push(model.logits(&model.forward_tokens(&[*id], &mut cache).unwrap()));
        }
        let stepped = Tensor::cat(&stepped, 0);
        let similarity = cosine(&prefilled, &stepped);
        assert!(similarity > 0.9999, "{quant}: cosine {similarity}");
        let agree = prefilled
            .argmax(-1, false)
            .eq_tensor(&stepped.argmax(-1, false));
        let agreement = agree
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(agreement > 0.9, "{quant}: greedy tokens differ");
    }
}

fn adapter(model: &Qwen25VlModel) -> LoraAdapter {
    LoraAdapter::load(&lora_fixture("text-and-vision-mlp"), model).unwrap()
}

/// The adapter stays unmerged on the quantized base: its effect is the f32 delta PEFT adds,
/// and switching it off restores the base exactly. Merging is refused.
#[test]
fn adapters_apply_unmerged_on_quantized_weights() {
    let mut model = load("untied", "int8");
    let base = prompt_logits(&model, &prompt());
    let adapter = adapter(&model);
    attach_adapter(&mut model, &adapter);
    let adapted = prompt_logits(&model, &prompt());
    assert!(
        max_diff(&adapted, &base) > 1e-3,
        "the adapter changes the output"
    );
    slc_engine::lora::apply::detach_adapters(&mut model);
    assert!(prompt_logits(&model, &prompt()).equal(&base));
    let error = merge_adapter(&mut model, &adapter).unwrap_err();
    assert!(error.to_string().contains("quantized"), "{error}");
    let gate = model.language_model.layers[0].mlp.gate_proj();
    assert!(gate.lora.is_none() && gate.weight.dense().is_none());

    // A deployment asking to merge its bank's adapter is refused before the bank is looked at.
    let bank = AdapterBank::load(&lora_fixture("bank"), &mut model, &tiny_clip_id()).unwrap();
    let Err(error) = ActiveAdapter::from_bank(bank, &mut model, true) else {
        panic!("merged into a quantized model")
    };
    assert!(error.to_string().contains("quantized model"), "{error}");
}

#[test]
fn quantization_options_are_checked_when_parsed() {
    let error = LoadOptions::parse("cpu", None, Some("int3")).unwrap_err();
    assert!(error.to_string().contains("int3"), "{error}");
    let error = LoadOptions::parse("cpu", Some("f32"), Some("int8")).unwrap_err();
    assert!(error.to_string().contains("bf16"), "{error}");
    let options = LoadOptions::parse("cpu", None, Some("int4")).unwrap();
    assert_eq!(
        (options.dtype, options.quant),
        (Kind::BFloat16, Quant::Int4)
    );
    let options = LoadOptions::parse("cpu", None, Some("none")).unwrap();
    assert_eq!((options.dtype, options.quant), (Kind::Float, Quant::None));
}

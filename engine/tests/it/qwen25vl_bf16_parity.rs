//! bf16 parity of the Qwen2.5-VL model with Hugging Face transformers 4.57.6 on CPU, on the tiny
//! fixtures: the engine loaded with `LoadOptions { dtype: BFloat16, device: Cpu }` against
//! `from_pretrained(dir, dtype=torch.bfloat16, attn_implementation="sdpa")` on the same
//! checkpoints and inputs as the f32 references (`make_bf16_references.py`).
//!
//! The tolerance is zero: full-prompt logits bit-identical and all 32 greedy tokens equal, and
//! the logits of three tokens fed in one step after the cached prompt (jump-forward's and prefix
//! reuse's masked path) bit-identical too.
//! Both sides run the same libtorch 2.11 CPU kernels, and the engine now runs HF's ops in HF's
//! order and dtypes (f32 RMSNorm cast back before the weight, text rotary in bf16 from cos/sin
//! cast to bf16, vision rotary in f32, SDPA with HF's scale, the patch embed as HF's Conv3d), so
//! nothing is left to differ. For scale: one op rounded differently moves a bf16 value by one
//! step, 2^-7 of its leading power of two, which for these logits (|x| < 4.5) is 2^-6 or 2^-5;
//! the patch embed run as a matmul instead of HF's convolution did exactly that (2 of 3,840
//! outputs one step off) and left the logits up to 0.072 apart. And the references' greedy
//! margins reach exactly 0 (ties, broken by the lower id on both sides), so any nonzero
//! difference can flip a token: it flipped token 12 of the one-image prompt.
//!
//! HF runs here, through `SLC_PYTHON`, because the bits depend on the CPU: oneDNN sums bf16
//! matmuls and convolutions in another order on AMX, AVX-512 and AVX2, so the committed
//! `references_bf16.safetensors` (made on an AMX Xeon) is the record of the figures, and the
//! comparison is always with HF on the CPU the test runs on.

use crate::lora_parity::python_outputs;
use crate::qwen25vl_parity::{fixture_dir, greedy_output, prompt, references};
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// See the module comment: the same kernels in the same order leave nothing to differ.
const LOGIT_TOLERANCE: f64 = 0.0;
const GREEDY_TOKENS: usize = 32;
/// `EXTRA_TOKENS` of `make_bf16_references.py`.
const EXTRA_TOKENS: [i64; 3] = [5, 17, 42];

/// (checkpoint directory, reference name, prompt), as `make_bf16_references.py` writes them.
const CASES: [(&str, &str, &str); 4] = [
    ("untied", "untied", "one_image"),
    ("untied", "untied", "two_images"),
    ("untied", "untied", "text_only"),
    ("tied-hub-sharded", "tied", "one_image"),
];

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// HF's bf16 outputs computed now, on this CPU, by the committed script.
fn hf_bf16_here() -> HashMap<String, Tensor> {
    python_outputs(&fixture_dir("make_bf16_references.py"), &[])
}

fn load_bf16(name: &str) -> Qwen25VlModel {
    let options = LoadOptions {
        device: Device::Cpu,
        dtype: Kind::BFloat16,
        quant: slc_engine::quant::Quant::None,
    };
    let model = Qwen25VlModel::load(&fixture_dir(name), options).unwrap();
    assert_eq!(model.kind(), Kind::BFloat16);
    model
}

/// Our full-prompt logits (bf16 widened to f32) and 32 greedy tokens for one prompt.
fn ours(model_dir: &str, prompt_name: &str) -> (Tensor, Vec<i64>) {
    let model = load_bf16(model_dir);
    let (input_ids, pixels, grids) = prompt(&references(), prompt_name);
    let embeds = pixels
        .as_ref()
        .map(|p| model.encode_images(p, &grids).unwrap());
    let mut cache = model.new_cache();
    let hidden = model
        .prefill(&input_ids, embeds.as_ref(), &grids, &mut cache)
        .unwrap();
    let logits = model.logits(&hidden);
    let (out, _) = greedy_output(&model, model_dir, prompt_name);
    (logits, out.token_ids)
}

/// Our logits for `EXTRA_TOKENS` fed in one step after the one-image prompt's cache: the masked
/// path of jump-forward and prefix reuse.
fn ours_extra_step() -> Tensor {
    let model = load_bf16("untied");
    let (input_ids, pixels, grids) = prompt(&references(), "one_image");
    let embeds = model.encode_images(&pixels.unwrap(), &grids).unwrap();
    let mut cache = model.new_cache();
    let _prompt = model
        .prefill(&input_ids, Some(&embeds), &grids, &mut cache)
        .unwrap();
    model.logits(&model.forward_tokens(&EXTRA_TOKENS, &mut cache).unwrap())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn bf16_logits_and_greedy_tokens_equal_hf_on_this_cpu() {
    let theirs = hf_bf16_here();
    let committed = read(&fixture_dir("references_bf16.safetensors"));
    let mut keys: Vec<_> = theirs.keys().collect();
    let mut committed_keys: Vec<_> = committed.keys().collect();
    keys.sort();
    committed_keys.sort();
    assert_eq!(
        keys, committed_keys,
        "references_bf16.safetensors is stale: rerun make_bf16_references.py"
    );
    for (dir, reference, name) in CASES {
        let key = format!("{reference}_{name}");
        let (logits, greedy) = ours(dir, name);
        let expected = Vec::<i64>::try_from(&theirs[&format!("greedy_{key}")]).unwrap();
        assert_eq!(expected.len(), GREEDY_TOKENS);
        let diff = max_diff(&logits, &theirs[&format!("logits_{key}")]);
        let agree = greedy
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "bf16 {dir}/{name}: max abs logit diff from HF here {diff}, greedy {agree}/{GREEDY_TOKENS}; \
             from the committed references {}",
            max_diff(&logits, &committed[&format!("logits_{key}")])
        );
        assert!(
            diff <= LOGIT_TOLERANCE,
            "{dir}/{name}: max abs logit diff from HF {diff} > {LOGIT_TOLERANCE}"
        );
        assert_eq!(
            greedy, expected,
            "{dir}/{name}: greedy tokens differ from HF"
        );
    }
    let diff = max_diff(&ours_extra_step(), &theirs["logits_untied_one_image_extra"]);
    eprintln!("bf16 untied/one_image + 3 tokens in one cached step: max abs logit diff {diff}");
    assert!(
        diff <= LOGIT_TOLERANCE,
        "three tokens after the cached prompt: max abs logit diff from HF {diff} > {LOGIT_TOLERANCE}"
    );
}

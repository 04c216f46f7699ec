//! The linear layers of Qwen2.5-VL that a LoRA adapter can target, by the module path PEFT
//! gives them (`named_modules()` of transformers' `Qwen2_5_VLForConditionalGeneration`, in the
//! canonical layout `model.language_model.…` / `model.visual.…` of `crate::weights`).
//!
//! The vision tower's patch embedding is a Conv3d in transformers, where PEFT would apply a
//! convolutional LoRA; it is not offered as a target here.

use crate::nn::Linear;
use crate::qwen2_5_vl::Qwen25VlModel;

const TEXT_ATTENTION: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
const MLP: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

/// Every targetable linear layer with its module path, in a fixed order.
pub fn linear_modules(model: &Qwen25VlModel) -> Vec<(String, &Linear)> {
    let mut out: Vec<(String, &Linear)> = Vec::new();
    for (i, layer) in model.language_model.layers.iter().enumerate() {
        let prefix = format!("model.language_model.layers.{i}");
        let attn = &layer.self_attn;
        for (name, linear) in
            TEXT_ATTENTION
                .iter()
                .zip([&attn.q_proj, &attn.k_proj, &attn.v_proj, &attn.o_proj])
        {
            out.push((format!("{prefix}.self_attn.{name}"), linear));
        }
        let mlp = &layer.mlp;
        for (name, linear) in MLP
            .iter()
            .zip([&mlp.gate_proj, &mlp.up_proj, &mlp.down_proj])
        {
            out.push((format!("{prefix}.mlp.{name}"), linear));
        }
    }
    for (i, block) in model.visual.blocks.iter().enumerate() {
        let prefix = format!("model.visual.blocks.{i}");
        out.push((format!("{prefix}.attn.qkv"), &block.attn.qkv));
        out.push((format!("{prefix}.attn.proj"), &block.attn.proj));
        let mlp = &block.mlp;
        for (name, linear) in MLP
            .iter()
            .zip([&mlp.gate_proj, &mlp.up_proj, &mlp.down_proj])
        {
            out.push((format!("{prefix}.mlp.{name}"), linear));
        }
    }
    out.push((
        "model.visual.merger.mlp.0".into(),
        &model.visual.merger.mlp_0,
    ));
    out.push((
        "model.visual.merger.mlp.2".into(),
        &model.visual.merger.mlp_2,
    ));
    out.push(("lm_head".into(), &model.lm_head));
    out
}

/// The same list as `linear_modules`, mutably, to attach or merge adapters.
pub fn linear_modules_mut(model: &mut Qwen25VlModel) -> Vec<(String, &mut Linear)> {
    let mut out: Vec<(String, &mut Linear)> = Vec::new();
    for (i, layer) in model.language_model.layers.iter_mut().enumerate() {
        let prefix = format!("model.language_model.layers.{i}");
        let attn = &mut layer.self_attn;
        let linears = [
            &mut attn.q_proj,
            &mut attn.k_proj,
            &mut attn.v_proj,
            &mut attn.o_proj,
        ];
        for (name, linear) in TEXT_ATTENTION.iter().zip(linears) {
            out.push((format!("{prefix}.self_attn.{name}"), linear));
        }
        let mlp = &mut layer.mlp;
        for (name, linear) in
            MLP.iter()
                .zip([&mut mlp.gate_proj, &mut mlp.up_proj, &mut mlp.down_proj])
        {
            out.push((format!("{prefix}.mlp.{name}"), linear));
        }
    }
    for (i, block) in model.visual.blocks.iter_mut().enumerate() {
        let prefix = format!("model.visual.blocks.{i}");
        out.push((format!("{prefix}.attn.qkv"), &mut block.attn.qkv));
        out.push((format!("{prefix}.attn.proj"), &mut block.attn.proj));
        let mlp = &mut block.mlp;
        for (name, linear) in
            MLP.iter()
                .zip([&mut mlp.gate_proj, &mut mlp.up_proj, &mut mlp.down_proj])
        {
            out.push((format!("{prefix}.mlp.{name}"), linear));
        }
    }
    let merger = &mut model.visual.merger;
    out.push(("model.visual.merger.mlp.0".into(), &mut merger.mlp_0));
    out.push(("model.visual.merger.mlp.2".into(), &mut merger.mlp_2));
    out.push(("lm_head".into(), &mut model.lm_head));
    out
}

/// [in_features, out_features] of a linear layer.
pub fn linear_shape(linear: &Linear) -> (i64, i64) {
    let size = linear.weight.size();
    (size[1], size[0])
}

//! The linear layers of Qwen2.5-VL that a LoRA adapter can target, by the module path PEFT
//! 0.17.1 gives them (`named_modules()` of transformers 4.57.6's
//! `Qwen2_5_VLForConditionalGeneration`, in the canonical layout `model.language_model.…` /
//! `model.visual.…` of `crate::weights`).
//!
//! The vision tower's patch embedding is a Conv3d in transformers, where PEFT would apply a
//! convolutional LoRA; it is not offered as a target here.

use crate::nn::Linear;
use crate::qwen2_5_vl::Qwen25VlModel;

/// One walk over the model's targetable linear layers, written once for shared and for
/// mutable access (the way rustc's MIR visitors are made): `$($mutability)?` is empty or `mut`.
macro_rules! walk_linears {
    ($model:ident, $visit:ident, $($mutability:ident)?) => {{
        for (i, layer) in (& $($mutability)? $model.language_model.layers).into_iter().enumerate() {
            let at = |name: &str| format!("model.language_model.layers.{i}.{name}");
            let (attn, mlp) = (& $($mutability)? layer.self_attn, & $($mutability)? layer.mlp);
            $visit(&at("self_attn.q_proj"), & $($mutability)? attn.qkv.parts[0]);
            $visit(&at("self_attn.k_proj"), & $($mutability)? attn.qkv.parts[1]);
            $visit(&at("self_attn.v_proj"), & $($mutability)? attn.qkv.parts[2]);
            $visit(&at("self_attn.o_proj"), & $($mutability)? attn.o_proj);
            $visit(&at("mlp.gate_proj"), & $($mutability)? mlp.gate_up.parts[0]);
            $visit(&at("mlp.up_proj"), & $($mutability)? mlp.gate_up.parts[1]);
            $visit(&at("mlp.down_proj"), & $($mutability)? mlp.down_proj);
        }
        for (i, block) in (& $($mutability)? $model.visual.blocks).into_iter().enumerate() {
            let at = |name: &str| format!("model.visual.blocks.{i}.{name}");
            let (attn, mlp) = (& $($mutability)? block.attn, & $($mutability)? block.mlp);
            $visit(&at("attn.qkv"), & $($mutability)? attn.qkv);
            $visit(&at("attn.proj"), & $($mutability)? attn.proj);
            $visit(&at("mlp.gate_proj"), & $($mutability)? mlp.gate_up.parts[0]);
            $visit(&at("mlp.up_proj"), & $($mutability)? mlp.gate_up.parts[1]);
            $visit(&at("mlp.down_proj"), & $($mutability)? mlp.down_proj);
        }
        let merger = & $($mutability)? $model.visual.merger;
        $visit("model.visual.merger.mlp.0", & $($mutability)? merger.mlp_0);
        $visit("model.visual.merger.mlp.2", & $($mutability)? merger.mlp_2);
        $visit("lm_head", & $($mutability)? $model.lm_head);
    }};
}

/// Calls `visit` with every targetable linear layer and its module path, in a fixed order.
pub fn visit_linears(model: &Qwen25VlModel, mut visit: impl FnMut(&str, &Linear)) {
    walk_linears!(model, visit,);
}

/// The same walk as [`visit_linears`], mutably, to attach or merge adapters.
pub fn visit_linears_mut(model: &mut Qwen25VlModel, mut visit: impl FnMut(&str, &mut Linear)) {
    walk_linears!(model, visit, mut);
}

/// [in_features, out_features] of a linear layer.
pub fn linear_shape(linear: &Linear) -> (i64, i64) {
    let (out_features, in_features) = linear.weight.shape();
    (in_features, out_features)
}

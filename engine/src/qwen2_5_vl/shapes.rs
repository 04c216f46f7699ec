//! Every tensor a Qwen2.5-VL checkpoint holds, with its shape, derived from the config the same
//! way transformers 4.57.6 `src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py` sizes
//! its modules. Used to make random checkpoints with real shapes (benchmarks, the GPU script)
//! in the hub's key layout.

use super::config::{Qwen25VlConfig, TextConfig, VisionConfig};

type Shapes = Vec<(String, Vec<i64>)>;

/// (hub key, shape) of every tensor, in a stable order. No `lm_head.weight` when tied.
pub fn checkpoint_tensors(config: &Qwen25VlConfig) -> Shapes {
    let mut out = Vec::new();
    text_tensors(&config.text, config.tie_word_embeddings, &mut out);
    vision_tensors(&config.vision, &mut out);
    out
}

/// `model.*` and, untied, `lm_head.weight`.
fn text_tensors(t: &TextConfig, tied: bool, out: &mut Shapes) {
    let mut add = |key: String, shape: Vec<i64>| out.push((key, shape));
    let (h, d) = (t.hidden_size, t.head_dim());
    add("model.embed_tokens.weight".into(), vec![t.vocab_size, h]);
    for i in 0..t.num_hidden_layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.input_layernorm.weight"), vec![h]);
        add(format!("{p}.post_attention_layernorm.weight"), vec![h]);
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![t.num_attention_heads * d, h],
        );
        add(
            format!("{p}.self_attn.q_proj.bias"),
            vec![t.num_attention_heads * d],
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![t.num_key_value_heads * d, h],
        );
        add(
            format!("{p}.self_attn.k_proj.bias"),
            vec![t.num_key_value_heads * d],
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![t.num_key_value_heads * d, h],
        );
        add(
            format!("{p}.self_attn.v_proj.bias"),
            vec![t.num_key_value_heads * d],
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, t.num_attention_heads * d],
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![t.intermediate_size, h],
        );
        add(
            format!("{p}.mlp.up_proj.weight"),
            vec![t.intermediate_size, h],
        );
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, t.intermediate_size],
        );
    }
    add("model.norm.weight".into(), vec![h]);
    if !tied {
        add("lm_head.weight".into(), vec![t.vocab_size, h]);
    }
}

/// `visual.*`.
fn vision_tensors(v: &VisionConfig, out: &mut Shapes) {
    let mut add = |key: String, shape: Vec<i64>| out.push((key, shape));
    let (vh, vi) = (v.hidden_size, v.intermediate_size);
    add(
        "visual.patch_embed.proj.weight".into(),
        vec![
            vh,
            v.in_channels,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ],
    );
    for i in 0..v.depth {
        let p = format!("visual.blocks.{i}");
        add(format!("{p}.norm1.weight"), vec![vh]);
        add(format!("{p}.norm2.weight"), vec![vh]);
        add(format!("{p}.attn.qkv.weight"), vec![3 * vh, vh]);
        add(format!("{p}.attn.qkv.bias"), vec![3 * vh]);
        add(format!("{p}.attn.proj.weight"), vec![vh, vh]);
        add(format!("{p}.attn.proj.bias"), vec![vh]);
        for (name, shape) in [
            ("gate_proj", [vi, vh]),
            ("up_proj", [vi, vh]),
            ("down_proj", [vh, vi]),
        ] {
            add(format!("{p}.mlp.{name}.weight"), shape.to_vec());
            add(format!("{p}.mlp.{name}.bias"), vec![shape[0]]);
        }
    }
    let merged = vh * v.spatial_merge_size * v.spatial_merge_size;
    add("visual.merger.ln_q.weight".into(), vec![vh]);
    add("visual.merger.mlp.0.weight".into(), vec![merged, merged]);
    add("visual.merger.mlp.0.bias".into(), vec![merged]);
    add(
        "visual.merger.mlp.2.weight".into(),
        vec![v.out_hidden_size, merged],
    );
    add("visual.merger.mlp.2.bias".into(), vec![v.out_hidden_size]);
}

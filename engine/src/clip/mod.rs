//! CLIP image encoder, matching HF `CLIPVisionModelWithProjection`
//! (transformers 4.57.6 `src/transformers/models/clip/modeling_clip.py`): the struct tree mirrors
//! the safetensors keys (`vision_model.embeddings.*`, `vision_model.pre_layrnorm`,
//! `vision_model.encoder.layers.N.*`, `vision_model.post_layernorm`, `visual_projection`).
//!
//! Loads `CLIPModel` checkpoints as published (`openai/clip-vit-large-patch14`, `-336`,
//! `clip-vit-base-patch32`: the text tower is ignored) and `CLIPVisionModelWithProjection`
//! ones. Preprocessing is `crate::preprocess::ClipImageProcessor`.

pub mod config;

use std::path::Path;

use tch::{Device, Kind, Tensor};

pub use config::ClipVisionConfig;

use crate::error::{EngineError, Result};
use crate::nn::Linear;
use crate::weights::{Checkpoint, WeightPath};

/// `torch.nn.LayerNorm` with affine weight and bias.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vs: &WeightPath, size: i64, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vs.get("weight", &[size])?,
            bias: vs.get("bias", &[size])?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [*self.weight.size().last().expect("1-D weight")],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// HF's `ACT2FN[hidden_act]` for the activations CLIP checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP's.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(EngineError::Config(format!(
                "CLIP hidden_act `{other}` is not supported (quick_gelu or gelu)"
            ))),
        }
    }

    fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Self::QuickGelu => x * (x * 1.702).sigmoid(),
            Self::Gelu => x.gelu("none"),
        }
    }
}

/// `CLIPVisionEmbeddings`: conv patch embedding without bias, a class token, learned
/// absolute positions.
struct ClipVisionEmbeddings {
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    patch_size: i64,
}

impl ClipVisionEmbeddings {
    fn load(vs: &WeightPath, config: &ClipVisionConfig) -> Result<Self> {
        let (hidden, patch) = (config.hidden_size, config.patch_size);
        let positions = (config.image_size / patch).pow(2) + 1;
        Ok(Self {
            patch_embedding: vs
                .pp("patch_embedding")
                .get("weight", &[hidden, config.num_channels, patch, patch])?,
            class_embedding: vs.get("class_embedding", &[hidden])?,
            position_embedding: vs
                .pp("position_embedding")
                .get("weight", &[positions, hidden])?,
            patch_size: patch,
        })
    }

    /// `pixel_values` [B, 3, H, W] → [B, 1 + patches, hidden].
    fn forward(&self, pixel_values: &Tensor) -> Tensor {
        let batch = pixel_values.size()[0];
        // TF32 off explicitly: cuDNN would otherwise run this f32 convolution in TF32 (its
        // default) while every matmul runs in full f32, and an embedding made on CPU would then
        // differ on CUDA enough to flip a near-tie adapter choice. The Python references set
        // `torch.backends.cudnn.allow_tf32 = False` the same way. On CPU the flag changes nothing.
        let patches = pixel_values
            .internal_convolution::<Tensor>(
                &self.patch_embedding,
                None,
                [self.patch_size, self.patch_size],
                [0, 0],
                [1, 1],
                false,
                [0, 0],
                1,
                false,
                false,
                tch::Cuda::user_enabled_cudnn(),
                false,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let hidden = self.class_embedding.size()[0];
        let class = self
            .class_embedding
            .view([1, 1, hidden])
            .expand([batch, 1, hidden], true);
        let embeddings = Tensor::cat(&[class, patches], 1);
        let positions = embeddings.size()[1];
        embeddings + self.position_embedding.narrow(0, 0, positions).unsqueeze(0)
    }
}

/// `CLIPAttention`: full bidirectional multi-head attention with biases.
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: i64,
}

impl ClipAttention {
    fn load(vs: &WeightPath, config: &ClipVisionConfig) -> Result<Self> {
        let h = config.hidden_size;
        Ok(Self {
            q_proj: Linear::load(&vs.pp("q_proj"), h, h, true)?,
            k_proj: Linear::load(&vs.pp("k_proj"), h, h, true)?,
            v_proj: Linear::load(&vs.pp("v_proj"), h, h, true)?,
            out_proj: Linear::load(&vs.pp("out_proj"), h, h, true)?,
            num_heads: config.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (batch, tokens, hidden) = x.size3().expect("[B, T, C]");
        let head_dim = hidden / self.num_heads;
        let split = |t: Tensor| {
            t.view([batch, tokens, self.num_heads, head_dim])
                .transpose(1, 2)
        };
        let q = split(self.q_proj.forward(x));
        let k = split(self.k_proj.forward(x));
        let v = split(self.v_proj.forward(x));
        let scale = (head_dim as f64).powf(-0.5);
        let attended = Tensor::scaled_dot_product_attention::<Tensor>(
            &q,
            &k,
            &v,
            None,
            0.0,
            false,
            Some(scale),
            false,
        );
        let merged = attended.transpose(1, 2).reshape([batch, tokens, hidden]);
        self.out_proj.forward(&merged)
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP blocks with residuals.
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl ClipEncoderLayer {
    fn load(vs: &WeightPath, config: &ClipVisionConfig, activation: Activation) -> Result<Self> {
        let (h, i, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        Ok(Self {
            layer_norm1: LayerNorm::load(&vs.pp("layer_norm1"), h, eps)?,
            self_attn: ClipAttention::load(&vs.pp("self_attn"), config)?,
            layer_norm2: LayerNorm::load(&vs.pp("layer_norm2"), h, eps)?,
            fc1: Linear::load(&vs.pp("mlp").pp("fc1"), h, i, true)?,
            fc2: Linear::load(&vs.pp("mlp").pp("fc2"), i, h, true)?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.self_attn.forward(&self.layer_norm1.forward(x));
        let mlp = self.fc2.forward(
            &self
                .activation
                .forward(&self.fc1.forward(&self.layer_norm2.forward(&x))),
        );
        x + mlp
    }
}

/// `CLIPVisionModelWithProjection`: `image_embeds` = projection of the post-normed class token.
pub struct ClipVisionModelWithProjection {
    pub config: ClipVisionConfig,
    embeddings: ClipVisionEmbeddings,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
}

impl ClipVisionModelWithProjection {
    /// Loads `config.json` and the weights of a CLIP checkpoint directory.
    pub fn load(dir: &Path, dtype: Kind, device: Device) -> Result<Self> {
        let config = ClipVisionConfig::from_model_dir(dir)?;
        let checkpoint = Checkpoint::open(dir, dtype, device)?;
        Self::from_checkpoint(config, &checkpoint)
    }

    pub fn from_checkpoint(config: ClipVisionConfig, checkpoint: &Checkpoint) -> Result<Self> {
        let activation = Activation::parse(&config.hidden_act)?;
        let root = checkpoint.root();
        let vision = root.pp("vision_model");
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                ClipEncoderLayer::load(
                    &vision.pp("encoder").pp("layers").pp(i),
                    &config,
                    activation,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: ClipVisionEmbeddings::load(&vision.pp("embeddings"), &config)?,
            pre_layrnorm: LayerNorm::load(&vision.pp("pre_layrnorm"), h, eps)?,
            layers,
            post_layernorm: LayerNorm::load(&vision.pp("post_layernorm"), h, eps)?,
            visual_projection: Linear::load(
                &root.pp("visual_projection"),
                h,
                config.projection_dim,
                false,
            )?,
            config,
        })
    }

    /// `pixel_values` [B, 3, image_size, image_size] → `image_embeds` [B, projection_dim]
    /// (not normalised, as HF returns them).
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let size = pixel_values.size();
        let expected = self.config.image_size;
        if size.len() != 4
            || size[1] != self.config.num_channels
            || size[2] != expected
            || size[3] != expected
        {
            return Err(EngineError::InvalidInput(format!(
                "CLIP pixel_values must be [B, {}, {expected}, {expected}], got {size:?}",
                self.config.num_channels
            )));
        }
        let device = self.visual_projection.weight.device();
        let kind = self.visual_projection.weight.kind();
        let _guard = tch::no_grad_guard();
        let mut hidden = self
            .embeddings
            .forward(&pixel_values.to_device(device).to_kind(kind));
        hidden = self.pre_layrnorm.forward(&hidden);
        for layer in &self.layers {
            hidden = layer.forward(&hidden);
        }
        let pooled = self.post_layernorm.forward(&hidden.select(1, 0));
        Ok(self.visual_projection.forward(&pooled))
    }

    /// `image_embeds` of one preprocessed image (`[3, H, W]` channel-first values).
    pub fn embed_pixels(&self, pixels: &crate::preprocess::ClipPixelValues) -> Result<Vec<f32>> {
        let tensor = Tensor::from_slice(&pixels.data).view([
            1,
            3,
            pixels.height as i64,
            pixels.width as i64,
        ]);
        let embeds = self
            .image_embeds(&tensor)?
            .to_kind(Kind::Float)
            .to_device(Device::Cpu);
        Ok(Vec::<f32>::try_from(embeds.flatten(0, -1))?)
    }
}

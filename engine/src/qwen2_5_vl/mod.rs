//! Qwen2.5-VL for conditional generation, as transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`
//! `Qwen2_5_VLForConditionalGeneration` / `Qwen2_5_VLModel`, split into the steps a server wants
//! to cache separately: encode images once (`encode_images`), prefill a prompt with precomputed
//! image embeddings (`prefill`), then feed one or several tokens at a time (`forward_tokens`).

pub mod config;
pub mod generation_config;
pub mod random_checkpoint;
pub mod rope;
pub mod shapes;
pub mod text;
pub mod vision;

use crate::device::parse_device;
use crate::error::{EngineError, Result};
use crate::nn::Linear;
use crate::quant::Quant;
use crate::weights::Checkpoint;
use config::Qwen25VlConfig;
pub use generation_config::eos_token_ids;
use rope::{MultimodalRotary, rope_index};
use std::path::Path;
use tch::{Device, Kind, Tensor};
pub use text::KvCache;
use text::TextModel;
use vision::VisionTransformer;

/// Where and in what precision to load a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub device: Device,
    /// The activations' dtype and that of every weight not quantized.
    pub dtype: Kind,
    /// The text decoder's linear layers and `lm_head` (see `crate::quant`).
    pub quant: Quant,
}

impl LoadOptions {
    /// From user strings (`cpu`/`cuda`, `f32`/`bf16`/none, `none`/`int8`/`int4`/none), with
    /// the device's default dtype, bf16 when quantized.
    ///
    /// Quantization is for the CPU (libtorch's int4 kernel there has no CUDA twin with the same
    /// packing, and a GPU has the memory for bf16), and its activations are bf16 (the kernels'
    /// vectorized path).
    pub fn parse(device: &str, dtype: Option<&str>, quant: Option<&str>) -> Result<Self> {
        let device = parse_device(device)?;
        let quant = Quant::parse(quant)?;
        if quant == Quant::None {
            let dtype = crate::device::parse_dtype(dtype, device)?;
            return Ok(LoadOptions {
                device,
                dtype,
                quant,
            });
        }
        if device != Device::Cpu {
            return Err(EngineError::Config(format!(
                "--quant {} runs on the CPU only; on {device:?} use --dtype bf16",
                quant.name()
            )));
        }
        let dtype = crate::device::parse_dtype(dtype.or(Some("bf16")), device)?;
        if dtype != Kind::BFloat16 {
            return Err(EngineError::Config(format!(
                "--quant {} computes in bf16; drop --dtype or pass --dtype bf16",
                quant.name()
            )));
        }
        Ok(LoadOptions {
            device,
            dtype,
            quant,
        })
    }

    /// Full precision in `dtype` on `device`.
    pub fn dense(device: Device, dtype: Kind) -> Self {
        LoadOptions {
            device,
            dtype,
            quant: Quant::None,
        }
    }
}

pub struct Qwen25VlModel {
    pub config: Qwen25VlConfig,
    pub visual: VisionTransformer,
    pub language_model: TextModel,
    pub lm_head: Linear,
    rotary: MultimodalRotary,
}

impl Qwen25VlModel {
    /// Loads a checkpoint directory (config.json plus safetensors, sharded or not, either layout).
    pub fn load(dir: &Path, options: LoadOptions) -> Result<Self> {
        let config = Qwen25VlConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir, options.dtype, options.device)?;
        Self::from_checkpoint(config, &checkpoint, options.quant)
    }

    /// The vision tower stays dense in the model dtype whatever `quant`: it runs on batches of
    /// hundreds of patches, where the weight-only kernels are slower than a bf16 GEMM.
    pub fn from_checkpoint(
        config: Qwen25VlConfig,
        checkpoint: &Checkpoint,
        quant: Quant,
    ) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        let root = checkpoint.root();
        let model = root.pp("model");
        let visual = VisionTransformer::load(&model.pp("visual"), &config.vision)?;
        let untied = root.pp("lm_head").contains("weight");
        let language_model =
            TextModel::load(&model.pp("language_model"), &config.text, quant, !untied)?;
        let t = &config.text;
        let lm_head = if untied {
            Linear::load_quantized(
                &root.pp("lm_head"),
                t.hidden_size,
                t.vocab_size,
                false,
                quant,
            )?
        } else if config.tie_word_embeddings {
            Linear::from_weight(language_model.embed_tokens.shallow_clone(), None)
        } else {
            return Err(EngineError::MissingTensor {
                key: checkpoint.file_key("lm_head.weight"),
            });
        };
        let rotary = MultimodalRotary::new(
            t.head_dim(),
            t.rope_theta,
            t.mrope_section.clone(),
            checkpoint.device(),
        );
        Ok(Qwen25VlModel {
            config,
            visual,
            language_model,
            lm_head,
            rotary,
        })
    }

    pub fn device(&self) -> Device {
        self.language_model.device()
    }
    pub fn kind(&self) -> Kind {
        self.language_model.kind()
    }
    /// Rebuilds every fused projection from its parts' weights (after a merge replaced them).
    pub fn refuse_projections(&mut self) {
        for layer in &mut self.language_model.layers {
            layer.self_attn.qkv.refuse();
            layer.mlp.gate_up.refuse();
        }
        for block in &mut self.visual.blocks {
            block.mlp.gate_up.refuse();
        }
    }

    /// Whether the text decoder is quantized (`--quant`; the `lm_head` always is then).
    pub fn is_quantized(&self) -> bool {
        self.lm_head.weight.dense().is_none()
    }
    /// The longest sequence (prompt plus generated tokens) the model accepts.
    pub fn context_length(&self) -> usize {
        self.config.text.max_position_embeddings as usize
    }
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.language_model.layers.len())
    }

    /// Runs the vision tower: pixel values [patches, patch_dim] of the images in prompt order and
    /// their grids -> merged embeddings [tokens, hidden]. The result can be cached per image.
    pub fn encode_images(&self, pixel_values: &Tensor, grids: &[[i64; 3]]) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        self.visual.forward(pixel_values, grids)
    }

    /// Number of image-pad tokens an image of this grid takes in the prompt.
    pub fn image_tokens(&self, grid: [i64; 3]) -> i64 {
        let merge = self.config.vision.spatial_merge_size;
        grid[0] * grid[1] * grid[2] / (merge * merge)
    }

    /// Runs a prompt into `cache`, placing `image_embeds` (from `encode_images`, all images of the
    /// prompt in order) at the image-pad tokens. Returns the final hidden states of the positions
    /// it ran [len - cached, hidden].
    ///
    /// Prefix reuse: when `cache` already holds the first `cache.len` positions of this same
    /// prompt (same ids, same images, same adapter: the caller's promise), only the rest runs.
    /// M-RoPE positions are computed over the whole prompt, so the result equals a full prefill.
    pub fn prefill(
        &self,
        input_ids: &[i64],
        image_embeds: Option<&Tensor>,
        grids: &[[i64; 3]],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        if input_ids.is_empty() {
            return Err(EngineError::InvalidInput("empty prompt".into()));
        }
        let cached = cache.len as usize;
        if cached >= input_ids.len() {
            return Err(EngineError::InvalidInput(format!(
                "a cached prefix of {cached} positions leaves nothing of a {}-token prompt to run",
                input_ids.len()
            )));
        }
        self.check_length(input_ids.len(), 0)?;
        self.check_vocabulary(input_ids)?;
        let index = rope_index(
            input_ids,
            grids,
            self.config.image_token_id,
            self.config.vision_start_token_id,
            self.config.vision.spatial_merge_size,
        )?;
        let new_ids = &input_ids[cached..];
        let embeds = self.with_image_embeds(
            self.language_model.embed(new_ids),
            input_ids,
            image_embeds,
            cached,
        )?;
        let flat: Vec<i64> = index
            .positions
            .iter()
            .flat_map(|axis| axis[cached..].iter().copied())
            .collect();
        let positions = Tensor::from_slice(&flat)
            .to_device(self.device())
            .view([3, new_ids.len() as i64]);
        let (cos, sin) = self.rotary.cos_sin(&positions);
        cache.rope_delta = index.delta;
        let hidden = self.language_model.forward(&embeds, &cos, &sin, cache);
        Ok(hidden.squeeze_dim(0))
    }

    /// Feeds `ids` after the cached positions (one decode step, or a forced run of tokens).
    /// Returns the final hidden states [ids.len(), hidden].
    pub fn forward_tokens(&self, ids: &[i64], cache: &mut KvCache) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        if ids.is_empty() {
            return Err(EngineError::InvalidInput("no tokens to feed".into()));
        }
        self.check_length(cache.len as usize, ids.len())?;
        self.check_vocabulary(ids)?;
        let start = cache.len + cache.rope_delta;
        let len = ids.len() as i64;
        let positions = Tensor::arange_start(start, start + len, (Kind::Int64, self.device()))
            .unsqueeze(0)
            .expand([3, len], false);
        let (cos, sin) = self.rotary.cos_sin(&positions);
        let embeds = self.language_model.embed(ids);
        let hidden = self.language_model.forward(&embeds, &cos, &sin, cache);
        Ok(hidden.squeeze_dim(0))
    }

    /// Logits in f32 for hidden states [n, hidden] -> [n, vocab].
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        self.lm_head.forward(hidden).to_kind(Kind::Float)
    }

    /// `embeds` [1, len - cached, hidden] of the prompt's uncached positions with the image
    /// features put at its image-pad tokens; features of pads inside the cached prefix are
    /// already in the cache and skipped.
    fn with_image_embeds(
        &self,
        embeds: Tensor,
        input_ids: &[i64],
        image_embeds: Option<&Tensor>,
        cached: usize,
    ) -> Result<Tensor> {
        let image_positions: Vec<i64> = input_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == self.config.image_token_id)
            .map(|(i, _)| i as i64)
            .collect();
        let Some(features) = image_embeds else {
            if image_positions.is_empty() {
                return Ok(embeds);
            }
            return Err(EngineError::InvalidInput(
                "the prompt has image tokens but no image embeddings were given".into(),
            ));
        };
        if features.size()[0] != image_positions.len() as i64
            || features.size()[1] != self.config.text.hidden_size
        {
            return Err(EngineError::InvalidInput(format!(
                "image features {:?} do not match {} image tokens",
                features.size(),
                image_positions.len()
            )));
        }
        let skipped = image_positions
            .iter()
            .take_while(|&&p| (p as usize) < cached)
            .count();
        let new_positions: Vec<i64> = image_positions[skipped..]
            .iter()
            .map(|p| p - cached as i64)
            .collect();
        if new_positions.is_empty() {
            return Ok(embeds);
        }
        let index = Tensor::from_slice(&new_positions).to_device(self.device());
        let rows = features.narrow(0, skipped as i64, new_positions.len() as i64);
        Ok(embeds.index_copy(
            1,
            &index,
            &rows
                .to_device(self.device())
                .to_kind(self.kind())
                .unsqueeze(0),
        ))
    }

    fn check_vocabulary(&self, ids: &[i64]) -> Result<()> {
        match ids
            .iter()
            .find(|&&id| id < 0 || id >= self.config.text.vocab_size)
        {
            Some(bad) => Err(EngineError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary"
            ))),
            None => Ok(()),
        }
    }

    fn check_length(&self, prompt_tokens: usize, new_tokens: usize) -> Result<()> {
        if prompt_tokens + new_tokens > self.context_length() {
            return Err(EngineError::PromptTooLong {
                prompt_tokens,
                max_new_tokens: new_tokens,
                context: self.context_length(),
            });
        }
        Ok(())
    }
}

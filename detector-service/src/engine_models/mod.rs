//! The real models behind the seams of [`crate::model`]: Qwen2.5-VL with the meta-concept
//! adapter bank through `slc-engine`'s [`ServingModel`] (adapters switched per request, the
//! per-worker vision and prefix caches), and the tch CLIP encoder for concept embeddings. Each
//! worker thread loads its own copy. What lives here is loading and the translation between the
//! seam's types and the engine's (`vlm.rs`, `clip.rs`); the model work is the engine's.

mod clip;
mod vlm;

use std::path::{Path, PathBuf};

use slc_engine::error::EngineError;
use slc_engine::lora::{ActiveAdapter, AdapterBank, BankDictionary};
use slc_engine::meta_train::embed::ClipImageEmbedder;
use slc_engine::pipeline::VlmPipeline;
use slc_engine::qwen2_5_vl::LoadOptions;
use slc_engine::serving::{CacheBounds, ServingModel};

use crate::embedding::CosineAdapterChooser;
use crate::model::{EdgeModels, ModelError, ModelLoader};
use clip::EngineClip;
use vlm::EngineVlm;

/// What every worker loads.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub model_dir: PathBuf,
    pub clip_dir: PathBuf,
    pub adapter_bank: Option<PathBuf>,
    /// Fold the bank's only adapter into the weights instead of applying it per request.
    pub merge_adapter: bool,
    pub device: String,
    /// `None`: the device's default (bf16 on CUDA, f32 on CPU).
    pub dtype: Option<String>,
    /// `None`: full precision (see `slc_engine::quant`).
    pub quant: Option<String>,
    /// Bound of the vision-encoder cache per worker; 0 turns it off.
    pub vision_cache_bytes: usize,
    /// Bound of the prefix KV cache per worker; 0 turns reuse off.
    pub prefix_cache_bytes: usize,
    /// Feed schema-forced runs of tokens in one forward pass (off: one pass per token).
    pub jump_forward: bool,
    /// Test hook, never set by the binary: a prompt containing this text runs a libtorch
    /// operation that fails (a shape mismatch), which tch turns into a panic, as it does for
    /// out-of-memory on a real device. Lets a test prove the worker survives one.
    pub fail_on_prompt: Option<String>,
}

/// How many GPUs libtorch sees (0 without CUDA).
pub fn cuda_device_count() -> usize {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

/// The device worker `worker` loads on: with a bare `cuda` and several GPUs, worker i takes
/// GPU i (round robin past the last), so each worker owns a GPU and its memory instead of
/// every copy of the model landing on GPU 0. An explicit `cuda:N` or `cpu` is kept.
pub fn worker_device(device: &str, worker: usize, gpus: usize) -> String {
    match device.trim().to_ascii_lowercase().as_str() {
        "cuda" | "gpu" if gpus > 1 => format!("cuda:{}", worker % gpus),
        _ => device.to_string(),
    }
}

/// `SLC_WORKERS` unset: one worker per GPU with a bare `cuda`, else one.
pub fn default_workers(device: &str, gpus: usize) -> usize {
    match device.trim().to_ascii_lowercase().as_str() {
        "cuda" | "gpu" => gpus.max(1),
        _ => 1,
    }
}

pub struct EngineLoader {
    pub options: EngineOptions,
}

impl ModelLoader for EngineLoader {
    fn load(&self, worker: usize) -> Result<EdgeModels, ModelError> {
        let options = &self.options;
        let device = worker_device(&options.device, worker, cuda_device_count());
        let load = LoadOptions::parse(&device, options.dtype.as_deref(), options.quant.as_deref())
            .map_err(failed)?;
        let embedder = ClipImageEmbedder::load(&options.clip_dir, load.device)
            .map_err(|e| context(&options.clip_dir, e))?;
        let mut pipeline = VlmPipeline::load(&options.model_dir, load)
            .map_err(|e| context(&options.model_dir, e))?;
        let adapters = match &options.adapter_bank {
            None => ActiveAdapter::base_only(),
            Some(bank_dir) => AdapterBank::load(bank_dir, &mut pipeline.model, &embedder.id)
                .and_then(|bank| {
                    ActiveAdapter::from_bank(bank, &mut pipeline.model, options.merge_adapter)
                })
                .map_err(|e| context(bank_dir, e))?,
        };
        let bounds = CacheBounds {
            vision_bytes: options.vision_cache_bytes,
            prefix_bytes: options.prefix_cache_bytes,
        };
        let base_name = options
            .model_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "qwen2.5-vl".into());
        Ok(EdgeModels {
            vlm: Box::new(EngineVlm {
                model: ServingModel::new(pipeline, adapters, bounds),
                base_name,
                jump_forward: options.jump_forward,
                fail_on_prompt: options.fail_on_prompt.clone(),
            }),
            embedder: Box::new(EngineClip(embedder)),
        })
    }
}

/// The chooser over the bank's dictionary (paper Eq. 1, top-`top_k`), read without loading
/// weights so the HTTP layer has it before the workers finish loading.
pub fn bank_chooser(bank_dir: &Path, top_k: usize) -> Result<CosineAdapterChooser, EngineError> {
    let dictionary = BankDictionary::read(bank_dir)?;
    let embeddings = dictionary.embeddings(bank_dir)?;
    Ok(CosineAdapterChooser {
        top_k,
        meta_concepts: dictionary
            .meta_concepts
            .iter()
            .map(|entry| entry.name.clone())
            .zip(embeddings)
            .collect(),
    })
}

/// The engine's error as the seam's: the client's mistakes stay the client's.
fn failed(error: EngineError) -> ModelError {
    if error.is_client_error() {
        ModelError::InvalidRequest(error.to_string())
    } else {
        ModelError::Failed(error.to_string())
    }
}

fn context(path: &Path, error: EngineError) -> ModelError {
    ModelError::Failed(format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_its_own_gpu_and_defaults_to_one_per_gpu() {
        let devices: Vec<String> = (0..5).map(|w| worker_device("cuda", w, 4)).collect();
        assert_eq!(devices, ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]);
        assert_eq!(worker_device("cuda", 3, 1), "cuda");
        assert_eq!(
            worker_device("cuda:1", 3, 4),
            "cuda:1",
            "an explicit GPU is kept"
        );
        assert_eq!(worker_device("cpu", 3, 4), "cpu");
        assert_eq!(default_workers("cuda", 4), 4);
        assert_eq!(default_workers("cuda", 0), 1);
        assert_eq!(default_workers("cpu", 4), 1);
    }
    use crate::model::{
        ContentPart, GenerationRequest, PromptMessage, Role, SamplingParams, TokenControl,
    };

    fn engine_fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures")
    }

    fn chat(adapter: &str) -> GenerationRequest {
        GenerationRequest {
            messages: vec![PromptMessage {
                role: Role::User,
                content: vec![ContentPart::Text("hi".into())],
            }],
            sampling: SamplingParams::greedy(2),
            json_schema: None,
            adapter: Some(adapter.into()),
        }
    }

    /// The real engine on the tiny fixtures: the engine's typed adapter-name errors reach the
    /// seam as a client error (an oversized mix) and as an unknown adapter (under the name the
    /// client sent), and a well-formed mix in any order runs.
    #[test]
    fn adapter_name_errors_are_the_clients() {
        let fixtures = engine_fixtures();
        let loader = EngineLoader {
            options: EngineOptions {
                model_dir: fixtures.join("qwen25vl/untied"),
                clip_dir: fixtures.join("clip/tiny-clip"),
                adapter_bank: Some(fixtures.join("lora/bank")),
                merge_adapter: false,
                device: "cpu".into(),
                dtype: Some("f32".into()),
                quant: None,
                vision_cache_bytes: 1 << 20,
                prefix_cache_bytes: 1 << 20,
                jump_forward: true,
                fail_on_prompt: None,
            },
        };
        let mut vlm = loader.load(0).unwrap().vlm;
        let mut on_text = |_: &str| TokenControl::Continue;
        // Issue 14: one adapter name repeated 200,000 times.
        let repeated = vec!["dug"; 200_000].join("+");
        match vlm.generate(&chat(&repeated), &mut on_text) {
            Err(ModelError::InvalidRequest(message)) => {
                assert!(message.contains("200000 members"), "{message}");
            }
            other => panic!("expected a client error, got {:?}", other.map(|o| o.text)),
        }
        match vlm.generate(&chat("dug+nope"), &mut on_text) {
            Err(ModelError::UnknownAdapter(name)) => assert_eq!(name, "dug+nope"),
            other => panic!(
                "expected an unknown adapter, got {:?}",
                other.map(|o| o.text)
            ),
        }
        vlm.generate(&chat("dug+bo"), &mut on_text).unwrap();
    }
}

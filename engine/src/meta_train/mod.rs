//! Offline meta-training (the SLC paper, section 3.3.1 and appendix C): CLIP-embed every
//! concept of the training datasets, cluster the embeddings with K-means, take the concept
//! nearest each centroid as a meta-concept, and train one LoRA adapter per meta-concept on its
//! cluster's conversations. The output is an adapter bank (`crate::lora::bank`): PEFT adapters
//! plus `dictionary.json`.
//!
//! Resumable: each adapter checkpoints under `OUTPUT/checkpoints/` (every few steps and at the
//! end) and a finished adapter is not retrained, so rerunning the same command after an
//! interruption continues where it stopped; deleting `adapters/<name>/` and rerunning with more
//! steps continues that adapter's training.
//! Deterministic for a seed: clustering, initialisation and example order derive from it.

pub mod cluster;
pub mod dataset;
pub mod embed;
pub mod examples;
pub mod trainer;
mod training;

use crate::error::{EngineError, Result};
use crate::lora::bank::{BANK_FORMAT, BankDictionary, MetaConceptEntry};
use crate::preprocess::{PixelBudget, Qwen2VlImageProcessor};
use crate::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use crate::tokenizer::QwenTokenizer;
use cluster::cluster_concepts;
use dataset::read_concept_datasets;
use embed::{ImageEmbedder, embed_concept};
use examples::{ExampleBuilder, TrainingExample};
use serde::Serialize;
use std::path::PathBuf;
use trainer::TrainerSettings;
use training::Training;

/// Everything `meta-train` needs; the defaults are the paper's recipe (appendix C).
#[derive(Debug, Clone)]
pub struct MetaTrainConfig {
    /// One folder per concept (see `dataset`).
    pub dataset_dir: PathBuf,
    /// The Qwen2.5-VL checkpoint directory (weights, tokenizer, preprocessor config).
    pub model_dir: PathBuf,
    /// Where the bank goes: `dictionary.json`, `adapters/<meta-concept>/`, `checkpoints/`.
    pub output_dir: PathBuf,
    /// K, the number of meta-concepts.
    pub meta_concepts: usize,
    /// Each adapter's training; its seed also seeds the clustering.
    pub recipe: TrainerSettings,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32` or `bf16`; `None` is bf16 on CUDA and f32 on CPU.
    pub dtype: Option<String>,
    /// The frozen base model's `--quant` (`none`, `int8`, `int4`; `None` is none). Adapters
    /// train unmerged on top in f32 either way.
    pub quant: Option<String>,
    /// Largest image area in pixels fed to the model (`None`: the preprocessor config's).
    pub max_pixels: Option<u64>,
    pub show_progress: bool,
}

impl MetaTrainConfig {
    pub fn new(dataset_dir: PathBuf, model_dir: PathBuf, output_dir: PathBuf) -> Self {
        MetaTrainConfig {
            dataset_dir,
            model_dir,
            output_dir,
            meta_concepts: 10,
            recipe: TrainerSettings {
                rank: 8,
                alpha: 8.0,
                learning_rate: 5e-5,
                weight_decay: 0.0,
                steps: 80,
                batch_size: 64,
                seed: 0,
                checkpoint_every: 10,
            },
            device: "cpu".into(),
            dtype: None,
            quant: None,
            max_pixels: None,
            show_progress: true,
        }
    }
}

/// How one adapter's training went.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterTrainingReport {
    pub meta_concept: String,
    pub members: Vec<String>,
    pub examples: usize,
    /// Mean loss of each optimizer step (all steps, including those of an earlier interrupted run).
    pub losses: Vec<f64>,
    /// Steps run by this invocation and the seconds they took (0 when the adapter was already done).
    pub steps_run: usize,
    pub seconds: f64,
    /// Whether a finished adapter from an earlier run was kept.
    pub reused: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetaTrainReport {
    pub output_dir: PathBuf,
    pub adapters: Vec<AdapterTrainingReport>,
}

pub(crate) fn io_error(path: &std::path::Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The model to train adapters on, with its tokenizer and image processor.
fn load_checkpoint(
    config: &MetaTrainConfig,
) -> Result<(Qwen25VlModel, QwenTokenizer, Qwen2VlImageProcessor)> {
    let options = LoadOptions::parse(
        &config.device,
        config.dtype.as_deref(),
        config.quant.as_deref(),
    )?;
    let model = Qwen25VlModel::load(&config.model_dir, options)?;
    let tokenizer = QwenTokenizer::from_model_dir(&config.model_dir)
        .map_err(|e| EngineError::Config(format!("tokenizer: {e}")))?;
    let processor = Qwen2VlImageProcessor::from_model_dir(&config.model_dir)
        .map_err(|e| EngineError::Config(format!("preprocessor: {e}")))?;
    Ok((model, tokenizer, processor))
}

/// Every concept's CLIP embedding and the K clusters of them (the paper's K-means).
fn embed_and_cluster(
    config: &MetaTrainConfig,
    embedder: &dyn ImageEmbedder,
    concepts: &[dataset::ConceptDataset],
) -> Result<(Vec<Vec<f32>>, Vec<cluster::ConceptCluster>)> {
    if config.meta_concepts > concepts.len() {
        return Err(EngineError::InvalidInput(format!(
            "K = {} meta-concepts asked for, but {} has only {} concepts",
            config.meta_concepts,
            config.dataset_dir.display(),
            concepts.len()
        )));
    }
    let embeddings = concepts
        .iter()
        .map(|c| embed_concept(embedder, &c.reference_images))
        .collect::<Result<Vec<_>>>()?;
    let clusters = cluster_concepts(&embeddings, config.meta_concepts, config.recipe.seed)?;
    Ok((embeddings, clusters))
}

/// Runs meta-training end to end and writes the bank to `config.output_dir`.
pub fn meta_train(
    config: &MetaTrainConfig,
    embedder: &dyn ImageEmbedder,
) -> Result<MetaTrainReport> {
    if config.recipe.steps == 0 || config.recipe.batch_size == 0 {
        return Err(EngineError::InvalidInput(
            "steps and batch size must be at least 1".into(),
        ));
    }
    let concepts = read_concept_datasets(&config.dataset_dir)?;
    let (embeddings, clusters) = embed_and_cluster(config, embedder, &concepts)?;

    let (mut model, tokenizer, processor) = load_checkpoint(config)?;
    let builder = ExampleBuilder {
        tokenizer: &tokenizer,
        processor: &processor,
        budget: PixelBudget {
            min_pixels: None,
            max_pixels: config.max_pixels,
        },
        merge_size: model.config.vision.spatial_merge_size as usize,
    };

    let training = Training::prepare(config)?;
    let mut reports = Vec::new();
    let mut entries = Vec::new();
    for (cluster_index, cluster) in clusters.iter().enumerate() {
        let meta = &concepts[cluster.meta_concept];
        entries.push(MetaConceptEntry {
            name: meta.name.clone(),
            adapter: format!("adapters/{}", meta.name),
            embedding: Some(embeddings[cluster.meta_concept].clone()),
            embedding_key: None,
        });
        let mut examples: Vec<TrainingExample> = Vec::new();
        for &member in &cluster.members {
            for conversation in &concepts[member].conversations {
                examples.push(builder.build(&concepts[member], conversation)?);
            }
        }
        let members = cluster
            .members
            .iter()
            .map(|&i| concepts[i].name.clone())
            .collect();
        let seed = config.recipe.seed.wrapping_add(cluster_index as u64);
        reports.push(training.train_or_reuse(&mut model, &meta.name, members, &examples, seed)?);
    }

    BankDictionary {
        format: BANK_FORMAT.into(),
        clip_model: embedder.clip_model(),
        embeddings_file: None,
        meta_concepts: entries,
    }
    .write(&config.output_dir)?;
    Ok(MetaTrainReport {
        output_dir: config.output_dir.clone(),
        adapters: reports,
    })
}

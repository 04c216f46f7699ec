//! `slc-detector meta-train`: the offline meta-training of the paper's section 3.3 (appendix C
//! recipe by default). Embeds every training concept with CLIP, clusters them into K
//! meta-concepts and trains one LoRA adapter per meta-concept; writes an adapter bank
//! (`dictionary.json` + PEFT adapters) that `serve --adapter-bank` loads. The work is the
//! engine's (`slc_engine::meta_train`); this is its command line.

use anyhow::Context;
use slc_engine::meta_train::embed::ClipImageEmbedder;
use slc_engine::meta_train::{MetaTrainConfig, MetaTrainReport, meta_train};
use slc_engine::qwen2_5_vl::LoadOptions;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct MetaTrainArgs {
    /// One folder per concept: reference images, `description.txt` and `conversations.json`
    /// (LLaVA-style turns, as in the SLC authors' `data/train/*.json`).
    #[arg(long, env = "SLC_META_DATASET")]
    pub dataset: PathBuf,
    /// The Qwen2.5-VL checkpoint to train adapters for.
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    /// The CLIP checkpoint that embeds concepts (the detector must run the same one).
    #[arg(long, env = "SLC_CLIP_DIR")]
    pub clip: PathBuf,
    /// Where the bank goes; rerunning with the same output resumes.
    #[arg(long, env = "SLC_META_OUTPUT")]
    pub output: PathBuf,
    /// K, the number of meta-concepts (at most the number of concepts).
    #[arg(long, env = "SLC_META_K", default_value_t = 10)]
    pub k: usize,
    #[arg(long, env = "SLC_META_RANK", default_value_t = 8)]
    pub rank: i64,
    #[arg(long, env = "SLC_META_ALPHA", default_value_t = 8.0)]
    pub alpha: f64,
    #[arg(long, env = "SLC_META_LR", default_value_t = 5e-5)]
    pub learning_rate: f64,
    #[arg(long, env = "SLC_META_WEIGHT_DECAY", default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Optimizer steps per adapter.
    #[arg(long, env = "SLC_META_STEPS", default_value_t = 80)]
    pub steps: usize,
    /// Effective batch: examples accumulated per optimizer step.
    #[arg(long, env = "SLC_META_BATCH", default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, env = "SLC_META_SEED", default_value_t = 0)]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "SLC_DEVICE", default_value = "cpu")]
    pub device: String,
    /// `f32` or `bf16` (default: bf16 on CUDA, f32 on CPU).
    #[arg(long, env = "SLC_DTYPE")]
    pub dtype: Option<String>,
    /// `none` (default), `int8` or `int4`: text decoder's linear layers and lm_head
    /// quantized at load time, bf16 activations, CPU only (see the README's "Edge speed").
    #[arg(long, env = "SLC_QUANT")]
    pub quant: Option<String>,
    /// Steps between resumable checkpoints.
    #[arg(long, env = "SLC_META_CHECKPOINT_EVERY", default_value_t = 10)]
    pub checkpoint_every: usize,
    /// Largest image area in pixels fed to the model (default: the preprocessor config's).
    #[arg(long, env = "SLC_META_MAX_PIXELS")]
    pub max_pixels: Option<u64>,
    /// No progress bars (logs and CI).
    #[arg(long, env = "SLC_META_QUIET", default_value_t = false)]
    pub quiet: bool,
}

/// Runs the command and returns the report it prints (losses per step of every adapter).
pub fn run(args: &MetaTrainArgs) -> anyhow::Result<MetaTrainReport> {
    let device =
        LoadOptions::parse(&args.device, args.dtype.as_deref(), args.quant.as_deref())?.device;
    let embedder = ClipImageEmbedder::load(&args.clip, device)
        .with_context(|| format!("loading CLIP from {}", args.clip.display()))?;
    let mut config = MetaTrainConfig::new(
        args.dataset.clone(),
        args.model.clone(),
        args.output.clone(),
    );
    config.meta_concepts = args.k;
    config.recipe.rank = args.rank;
    config.recipe.alpha = args.alpha;
    config.recipe.learning_rate = args.learning_rate;
    config.recipe.weight_decay = args.weight_decay;
    config.recipe.steps = args.steps;
    config.recipe.batch_size = args.batch_size;
    config.recipe.seed = args.seed;
    config.device = args.device.clone();
    config.dtype = args.dtype.clone();
    config.quant = args.quant.clone();
    config.recipe.checkpoint_every = args.checkpoint_every;
    config.max_pixels = args.max_pixels;
    config.show_progress = !args.quiet;
    Ok(meta_train(&config, &embedder)?)
}

//! `slc-detector embed --clip DIR IMAGE...`: CLIP image embeddings and their pairwise cosines
//! as JSON. A smoke tool for checking a CLIP directory and how alike concept photos look to it.

use anyhow::Context;
use slc_engine::meta_train::embed::{ClipImageEmbedder, EmbedReport, embed_report};
use slc_engine::qwen2_5_vl::LoadOptions;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// The CLIP checkpoint directory (`openai/clip-vit-large-patch14` layout).
    #[arg(long, env = "SLC_CLIP_DIR")]
    pub clip: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "SLC_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Image files to embed.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<EmbedReport> {
    let device = LoadOptions::parse(&args.device, None, None)?.device;
    let embedder = ClipImageEmbedder::load(&args.clip, device)
        .with_context(|| format!("loading CLIP from {}", args.clip.display()))?;
    Ok(embed_report(&embedder, &args.images)?)
}

//! The `slc-eval` command line. Every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::OnExisting;
use crate::dataset_root::parse_path_map;
use crate::readers::{DEFAULT_RECOGNITION_QUESTION, InputSpec};
use crate::scoring::Scoring;

#[derive(Debug, Parser)]
#[command(
    name = "slc-eval",
    version,
    about = "Runs the SLC paper's benchmarks against a running edge and writes a report."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register the concepts, ask every question in every mode, score, write the report.
    Run(Box<RunConfig>),
    /// Write a recognition file from folders of positives and negatives.
    MakeRecognition(MakeRecognitionConfig),
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    /// The edge's base URL.
    #[arg(long, env = "SLC_EDGE_URL", default_value = "http://127.0.0.1:8080")]
    pub edge_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    #[arg(long, env = "SLC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Evaluation files, `[KIND:]PATH` with KIND rec, vqa, qa or sqa (else from the name).
    #[arg(long = "input", env = "SLC_EVAL_INPUTS", value_delimiter = ',')]
    pub inputs: Vec<InputSpec>,
    /// Folder the files' image paths are relative to.
    #[arg(long, env = "SLC_DATASET_ROOT", default_value = ".")]
    pub dataset_root: PathBuf,
    /// Prefix rewrites `FROM=TO` tried when an image is not found as written.
    #[arg(long = "path-map", env = "SLC_EVAL_PATH_MAPS", value_delimiter = ',', value_parser = parse_path_map, default_value = "yollava-data=yollava")]
    pub path_maps: Vec<(String, String)>,
    /// Concepts to register first (`database.json` format). Without it the edge must
    /// already know every concept.
    #[arg(long, env = "SLC_CONCEPTS_FILE")]
    pub concepts_file: Option<PathBuf>,
    #[arg(long, env = "SLC_EVAL_ON_EXISTING", value_enum, default_value_t = OnExisting::Update)]
    pub on_existing: OnExisting,
    /// Keep only items whose concepts are all in this list.
    #[arg(long, env = "SLC_EVAL_ONLY_CONCEPTS", value_delimiter = ',')]
    pub only_concepts: Vec<String>,
    /// Drop items about concepts the concepts file lacks, instead of stopping.
    #[arg(long, env = "SLC_EVAL_SKIP_UNREGISTERED")]
    pub skip_unregistered: bool,
    /// Drop items whose image is missing (listed in the report) instead of stopping.
    #[arg(long, env = "SLC_EVAL_SKIP_MISSING_IMAGES")]
    pub skip_missing_images: bool,
    /// Recognition without a file: this concept's positives …
    #[arg(long, env = "SLC_EVAL_POSITIVES", requires_all = ["negatives", "recognition_concept"])]
    pub positives: Option<PathBuf>,
    /// … and negatives (images without it).
    #[arg(long, env = "SLC_EVAL_NEGATIVES", requires = "positives")]
    pub negatives: Option<PathBuf>,
    #[arg(long, env = "SLC_EVAL_RECOGNITION_CONCEPT", requires = "positives")]
    pub recognition_concept: Option<String>,
    /// Recognition without a file, full Yo'LLaVA protocol: a `test/` folder with one folder
    /// per concept; every concept is asked about every image.
    #[arg(long, env = "SLC_EVAL_RECOGNITION_TEST_FOLDERS")]
    pub recognition_test_folders: Option<PathBuf>,
    /// The recognition question when a file gives none; `{concept}` becomes `<id>`.
    #[arg(long, env = "SLC_EVAL_RECOGNITION_QUESTION", default_value = DEFAULT_RECOGNITION_QUESTION)]
    pub recognition_question: String,
    /// Comma-separated: the paper's full, no_reflection, no_detector, pure, and the ablation
    /// full_recheck (full with a second look at concepts the question names but the small
    /// model missed).
    #[arg(long, env = "SLC_EVAL_MODES", value_delimiter = ',', default_value = "full", value_parser = parse_mode)]
    pub modes: Vec<crate::EvalMode>,
    /// Headline scoring; both are always computed and reported.
    #[arg(long, env = "SLC_EVAL_SCORING", value_enum, default_value_t = Scoring::Strict)]
    pub scoring: Scoring,
    /// Permute each multiple-choice item's options (seeded, per item).
    #[arg(long, env = "SLC_EVAL_SHUFFLE_OPTIONS")]
    pub shuffle_options: bool,
    #[arg(long, env = "SLC_EVAL_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Requests in flight at once.
    #[arg(long, env = "SLC_EVAL_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// At most N items from each input (in file order), for quick runs.
    #[arg(long, env = "SLC_EVAL_LIMIT")]
    pub limit: Option<usize>,
    /// Where report.json, summary.md and the charts go.
    #[arg(long, env = "SLC_EVAL_OUT", default_value = "eval-out")]
    pub out: PathBuf,
    /// Response cache; defaults to `<out>/cache`. Reused runs only ask what is missing.
    #[arg(long, env = "SLC_EVAL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Mixed into the cache keys; set it to the model/adapter version to force fresh answers.
    #[arg(long, env = "SLC_EVAL_CACHE_SALT", default_value = "")]
    pub cache_salt: String,
    /// Per-request timeout in seconds.
    #[arg(long, env = "SLC_EVAL_TIMEOUT_SECS", default_value_t = 600)]
    pub timeout_secs: u64,
    #[arg(long, env = "SLC_EVAL_PSEUDONYMIZE")]
    pub pseudonymize: bool,
    #[arg(long, env = "SLC_EVAL_BATCHED_VERIFICATION")]
    pub batched_verification: bool,
    /// Longest answer in tokens (a letter or yes/no needs few; the model's default when absent).
    #[arg(long, env = "SLC_EVAL_MAX_ANSWER_TOKENS")]
    pub max_answer_tokens: Option<u32>,
    #[arg(long, env = "SLC_EVAL_NO_PROGRESS")]
    pub no_progress: bool,
    /// Exit 0 even when some requests failed (they are in the report either way).
    #[arg(long, env = "SLC_EVAL_ALLOW_ERRORS")]
    pub allow_errors: bool,
}

#[derive(Debug, Clone, Args)]
pub struct MakeRecognitionConfig {
    #[arg(long, env = "SLC_EVAL_RECOGNITION_CONCEPT", requires_all = ["positives", "negatives"])]
    pub concept: Option<String>,
    #[arg(long, env = "SLC_EVAL_POSITIVES")]
    pub positives: Option<PathBuf>,
    #[arg(long, env = "SLC_EVAL_NEGATIVES")]
    pub negatives: Option<PathBuf>,
    /// Alternative: a `test/` folder with one folder per concept (full Yo'LLaVA protocol).
    #[arg(
        long,
        env = "SLC_EVAL_RECOGNITION_TEST_FOLDERS",
        conflicts_with = "concept"
    )]
    pub test_folders: Option<PathBuf>,
    /// Image paths are written relative to this folder when they lie under it.
    #[arg(long, env = "SLC_DATASET_ROOT", default_value = ".")]
    pub dataset_root: PathBuf,
    /// The `split` the figures are grouped under.
    #[arg(long, env = "SLC_EVAL_RECOGNITION_SPLIT", default_value = "yollava")]
    pub split: String,
    /// The recognition file to write.
    #[arg(long, env = "SLC_EVAL_RECOGNITION_OUT")]
    pub out: PathBuf,
}

pub fn parse_mode(text: &str) -> Result<crate::EvalMode, String> {
    serde_json::from_value(serde_json::Value::String(text.trim().to_string())).map_err(|_| {
        format!(
            "unknown mode {text:?}; expected full, no_reflection, no_detector, pure or full_recheck"
        )
    })
}

//! One meta-concept's adapter within a meta-training run: kept when an earlier run finished it,
//! else trained (resuming from its checkpoint) with a progress bar, saved as a PEFT adapter
//! with its `training.json` report.

use super::examples::TrainingExample;
use super::trainer::{LANGUAGE_MODEL_PROJECTIONS, LoraTrainingState, train_adapter};
use super::{AdapterTrainingReport, MetaTrainConfig, io_error};
use crate::error::{EngineError, Result};
use crate::lora::adapter::{CONFIG_FILE, WEIGHTS_FILE, save_peft_adapter};
use crate::lora::config::{AdapterConfig, TargetModules};
use crate::qwen2_5_vl::Qwen25VlModel;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// What every adapter of a run shares.
pub(super) struct Training<'a> {
    config: &'a MetaTrainConfig,
    adapter_config: AdapterConfig,
    adapters_dir: PathBuf,
    checkpoints_dir: PathBuf,
}

impl<'a> Training<'a> {
    /// The run's settings, and its `adapters/` and `checkpoints/` directories created.
    pub(super) fn prepare(config: &'a MetaTrainConfig) -> Result<Self> {
        let adapters_dir = config.output_dir.join("adapters");
        let checkpoints_dir = config.output_dir.join("checkpoints");
        std::fs::create_dir_all(&adapters_dir).map_err(|e| io_error(&adapters_dir, e))?;
        std::fs::create_dir_all(&checkpoints_dir).map_err(|e| io_error(&checkpoints_dir, e))?;
        Ok(Training {
            config,
            adapter_config: AdapterConfig::new(
                config.recipe.rank,
                config.recipe.alpha,
                TargetModules::Pattern(LANGUAGE_MODEL_PROJECTIONS.into()),
            ),
            adapters_dir,
            checkpoints_dir,
        })
    }

    /// The adapter of meta-concept `name`, trained on `examples` (its cluster's conversations)
    /// unless an earlier run finished it. `seed` initialises its factors.
    pub(super) fn train_or_reuse(
        &self,
        model: &mut Qwen25VlModel,
        name: &str,
        members: Vec<String>,
        examples: &[TrainingExample],
        seed: u64,
    ) -> Result<AdapterTrainingReport> {
        let adapter_dir = self.adapters_dir.join(name);
        let report_path = adapter_dir.join("training.json");
        if let Some(losses) = finished_losses(&adapter_dir, &report_path) {
            return Ok(AdapterTrainingReport {
                meta_concept: name.to_string(),
                members,
                examples: examples.len(),
                losses,
                steps_run: 0,
                seconds: 0.0,
                reused: true,
            });
        }
        let image_embeds = encode_example_images(model, examples)?;
        let checkpoint = self.checkpoints_dir.join(format!("{name}.safetensors"));
        let mut state =
            LoraTrainingState::new(model, self.config.recipe.rank, seed, model.device());
        if checkpoint.is_file() {
            state.load_checkpoint(&checkpoint)?;
        }
        let progress = self.progress_bar(name, state.step)?;
        let started_at = state.step;
        let clock = Instant::now();
        let mut on_step = |_: usize, loss: f64| {
            progress.set_message(format!("{loss:.4}"));
            progress.inc(1);
        };
        train_adapter(
            model,
            &mut state,
            examples,
            &image_embeds,
            &self.config.recipe,
            name,
            &checkpoint,
            &mut on_step,
        )?;
        progress.finish();
        let seconds = clock.elapsed().as_secs_f64();
        save_peft_adapter(&adapter_dir, &self.adapter_config, &state.factors())?;
        let report = AdapterTrainingReport {
            meta_concept: name.to_string(),
            members,
            examples: examples.len(),
            losses: state.losses.clone(),
            steps_run: self.config.recipe.steps - started_at,
            seconds,
            reused: false,
        };
        let json = serde_json::to_string_pretty(&report).map_err(|e| io_error(&report_path, e))?;
        std::fs::write(&report_path, json + "\n").map_err(|e| io_error(&report_path, e))?;
        Ok(report)
    }

    fn progress_bar(&self, name: &str, position: usize) -> Result<ProgressBar> {
        let progress = if self.config.show_progress {
            ProgressBar::new(self.config.recipe.steps as u64)
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(
            ProgressStyle::with_template(
                "{prefix:>16} [{bar:30}] {pos}/{len} steps, loss {msg}, {per_sec}, ETA {eta}",
            )
            .map_err(|e| EngineError::Config(e.to_string()))?
            .progress_chars("=> "),
        );
        progress.set_prefix(name.to_string());
        progress.set_position(position as u64);
        Ok(progress)
    }
}

/// The losses of an adapter an earlier run finished (adapter files and report present).
fn finished_losses(adapter_dir: &Path, report_path: &Path) -> Option<Vec<f64>> {
    let finished = adapter_dir.join(CONFIG_FILE).is_file()
        && adapter_dir.join(WEIGHTS_FILE).is_file()
        && report_path.is_file();
    if !finished {
        return None;
    }
    Some(
        std::fs::read_to_string(report_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| serde_json::from_value::<Vec<f64>>(v["losses"].clone()).ok())
            .unwrap_or_default(),
    )
}

/// The frozen vision tower's output for each example's images, computed once per adapter.
fn encode_example_images(
    model: &Qwen25VlModel,
    examples: &[TrainingExample],
) -> Result<Vec<Option<Tensor>>> {
    let _guard = tch::no_grad_guard();
    examples
        .iter()
        .map(|e| {
            if e.grids.is_empty() {
                return Ok(None);
            }
            let pixels = Tensor::from_slice(&e.pixel_values)
                .view([-1, e.patch_dim as i64])
                .to_device(model.device())
                .to_kind(model.kind());
            model.encode_images(&pixels, &e.grids).map(Some)
        })
        .collect()
}

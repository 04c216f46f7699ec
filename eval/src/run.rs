//! One `slc-eval run` from flags to report files, in the order a person would do it by hand:
//! read the questions, pick the ones asked for, find their images, register the concepts,
//! ask, score, write.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::cache::ResponseCache;
use crate::client::EdgeClient;
use crate::concepts_file::load_concepts_file;
use crate::config::{MakeRecognitionConfig, RunConfig};
use crate::dataset_root::DatasetRoot;
use crate::error::{EvalError, Result};
use crate::items::{EvalItem, Expected};
use crate::readers::recognition::{RecognitionFile, from_folders, from_test_folders};
use crate::readers::{InputSpec, ReaderOptions, load_input};
use crate::report::{Report, RunMeta, WrittenReport, build_report, write_report};
use crate::runner::{RunSettings, run_items};

#[derive(Debug)]
pub struct RunOutcome {
    pub report: Report,
    pub written: WrittenReport,
}

impl RunOutcome {
    pub fn errors(&self) -> u64 {
        self.report.modes.iter().map(|m| m.errors).sum()
    }

    pub fn summary_line(&self) -> String {
        format!(
            "{} answers over {} mode(s), {} failed requests; report: {}, {}",
            self.report.items.len(),
            self.report.modes.len(),
            self.errors(),
            self.written.json.display(),
            self.written.markdown.display()
        )
    }

    /// 2 when requests failed (unless allowed): the report exists, but is incomplete.
    pub fn exit_code(&self, allow_errors: bool) -> std::process::ExitCode {
        if self.errors() > 0 && !allow_errors {
            std::process::ExitCode::from(2)
        } else {
            std::process::ExitCode::SUCCESS
        }
    }
}

fn write_recognition_file(file: &RecognitionFile, path: &std::path::Path) -> Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|source| EvalError::io(folder, source))?;
    }
    let body = serde_json::to_vec_pretty(file).expect("serializes");
    std::fs::write(path, body).map_err(|source| EvalError::io(path, source))
}

pub fn make_recognition(config: &MakeRecognitionConfig) -> Result<PathBuf> {
    let root = Some(config.dataset_root.as_path());
    let file = match (
        &config.test_folders,
        &config.concept,
        &config.positives,
        &config.negatives,
    ) {
        (Some(test), _, _, _) => from_test_folders(test, &config.split, root)?,
        (None, Some(concept), Some(positives), Some(negatives)) => {
            from_folders(concept, positives, negatives, &config.split, root)?
        }
        _ => {
            return Err(EvalError::Usage(
                "give --concept with --positives and --negatives, or --test-folders".into(),
            ));
        }
    };
    write_recognition_file(&file, &config.out)?;
    Ok(config.out.clone())
}

/// Reads, filters and limits every input, generating the recognition file first when the
/// run was given folders instead.
pub fn collect_items(config: &RunConfig) -> Result<(Vec<EvalItem>, Vec<String>)> {
    let options = ReaderOptions {
        recognition_question: config.recognition_question.clone(),
    };
    let mut inputs: Vec<InputSpec> = config.inputs.clone();
    let root = Some(config.dataset_root.as_path());
    let generated = match (&config.recognition_test_folders, &config.positives) {
        (Some(test), _) => Some(from_test_folders(test, "yollava", root)?),
        (None, Some(positives)) => {
            let negatives = config
                .negatives
                .as_ref()
                .expect("clap requires --negatives");
            let concept = config
                .recognition_concept
                .as_ref()
                .expect("clap requires the concept");
            Some(from_folders(
                concept, positives, negatives, "yollava", root,
            )?)
        }
        (None, None) => None,
    };
    if let Some(file) = generated {
        let path = config.out.join("recognition.json");
        write_recognition_file(&file, &path)?;
        inputs.push(InputSpec {
            task: Some(crate::items::Task::Recognition),
            path,
        });
    }
    if inputs.is_empty() {
        return Err(EvalError::Usage(
            "nothing to evaluate: give --input, --positives/--negatives or --recognition-test-folders".into(),
        ));
    }
    let only: BTreeSet<&str> = config
        .only_concepts
        .iter()
        .map(|c| c.trim_matches(['<', '>']))
        .collect();
    let mut items = Vec::new();
    let mut input_names = Vec::new();
    for spec in &inputs {
        input_names.push(spec.path.display().to_string());
        let mut from_file = load_input(spec, &options)?;
        if !only.is_empty() {
            from_file.retain(|item| item.concepts.iter().all(|c| only.contains(c.as_str())));
        }
        if let Some(limit) = config.limit {
            from_file = limit_items(from_file, limit);
        }
        items.extend(from_file);
    }
    let mut seen = HashSet::new();
    for item in &items {
        if !seen.insert(item.id.clone()) {
            return Err(EvalError::bad_item(
                &item.id,
                "appears twice; two inputs share a file name (rename one)",
            ));
        }
    }
    Ok((items, input_names))
}

fn resolve_images(config: &RunConfig, items: &mut Vec<EvalItem>) -> Result<Vec<String>> {
    let root = DatasetRoot::new(config.dataset_root.clone(), config.path_maps.clone());
    if config.skip_missing_images {
        let dropped = root.resolve_items_dropping_missing(items);
        if !dropped.is_empty() {
            tracing::warn!(
                count = dropped.len(),
                "dropped items whose image is missing"
            );
        }
        Ok(dropped)
    } else {
        root.resolve_items(items)?;
        Ok(Vec::new())
    }
}

/// The first `limit` items in file order; for recognition, half of them positives and half
/// negatives (as far as the file has them), so a quick run still measures both recalls.
pub fn limit_items(items: Vec<EvalItem>, limit: usize) -> Vec<EvalItem> {
    let is_recognition = |item: &EvalItem| matches!(item.expected, Expected::Presence { .. });
    if items.len() <= limit || !items.iter().all(is_recognition) {
        return items.into_iter().take(limit).collect();
    }
    let present = |item: &EvalItem| matches!(item.expected, Expected::Presence { present: true });
    let positives = items.iter().filter(|i| present(i)).count();
    let negatives = items.len() - positives;
    let mut take_positives = limit.div_ceil(2).min(positives);
    let take_negatives = (limit - take_positives).min(negatives);
    take_positives = (limit - take_negatives).min(positives);
    let (mut kept_positives, mut kept_negatives) = (0, 0);
    items
        .into_iter()
        .filter(|item| {
            let counter = if present(item) {
                (&mut kept_positives, take_positives)
            } else {
                (&mut kept_negatives, take_negatives)
            };
            if *counter.0 < counter.1 {
                *counter.0 += 1;
                true
            } else {
                false
            }
        })
        .collect()
}

pub async fn execute(config: &RunConfig) -> Result<RunOutcome> {
    let (mut items, input_names) = collect_items(config)?;
    let client = EdgeClient::new(
        &config.edge_url,
        config.api_key.clone(),
        Duration::from_secs(config.timeout_secs),
    )?;
    let mut categories = BTreeMap::new();
    let mut skipped_missing_images = Vec::new();
    if let Some(path) = &config.concepts_file {
        let concepts = load_concepts_file(path)?;
        let known: BTreeSet<String> = concepts.iter().map(|c| c.id.clone()).collect();
        let unknown: BTreeSet<&String> = items
            .iter()
            .flat_map(|item| item.concepts.iter())
            .filter(|c| !known.contains(*c))
            .collect();
        if !unknown.is_empty() {
            if config.skip_unregistered {
                tracing::warn!(
                    ?unknown,
                    "dropping items about concepts the concepts file lacks"
                );
                items.retain(|item| item.concepts.iter().all(|c| known.contains(c)));
            } else {
                let first = items
                    .iter()
                    .find(|item| item.concepts.iter().any(|c| !known.contains(c)))
                    .map(|item| item.id.clone())
                    .unwrap_or_default();
                return Err(EvalError::bad_item(
                    first,
                    format!(
                        "concepts {unknown:?} are not in {} (use --only-concepts or --skip-unregistered)",
                        path.display()
                    ),
                ));
            }
        }
        // Images first: a missing one should stop the run before the edge is touched.
        skipped_missing_images = resolve_images(config, &mut items)?;
        let used: BTreeSet<&String> = items.iter().flat_map(|item| item.concepts.iter()).collect();
        for concept in concepts.iter().filter(|c| used.contains(&c.id)) {
            let outcome = client.register(concept, config.on_existing).await?;
            tracing::info!(concept = %concept.id, ?outcome, "concept registration");
            if let Some(category) = &concept.category {
                categories.insert(concept.id.clone(), category.clone());
            }
        }
    }
    if items.is_empty() {
        return Err(EvalError::Usage(
            "no items left to evaluate after filtering".into(),
        ));
    }
    if config.concepts_file.is_none() {
        skipped_missing_images = resolve_images(config, &mut items)?;
    }
    let cache = ResponseCache::new(
        config
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.out.join("cache")),
        config.cache_salt.clone(),
    );
    let settings = RunSettings {
        modes: config.modes.clone(),
        shuffle_seed: config.shuffle_options.then_some(config.seed),
        concurrency: config.concurrency,
        pseudonymize: config.pseudonymize,
        batched_verification: config.batched_verification,
        max_answer_tokens: config.max_answer_tokens,
        show_progress: !config.no_progress,
    };
    let records = run_items(&client, &cache, &items, &settings).await?;
    let meta = RunMeta {
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        edge_url: client.base_url().to_string(),
        inputs: input_names,
        modes: config.modes.clone(),
        scoring: config.scoring,
        shuffle_seed: settings.shuffle_seed,
        limit: config.limit,
        items_per_mode: items.len(),
        skipped_missing_images,
    };
    let report = build_report(meta, records, &categories);
    let written = write_report(&report, &config.out)?;
    Ok(RunOutcome { report, written })
}

//! The run's report: every item (JSON), a Markdown summary, a PNG chart per mode.

pub mod chart;
pub mod markdown;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::EvalMode;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::items::Task;
use crate::metrics::{MetricRow, Vote, summarize, summarize_by_task};
use crate::runner::ItemRecord;
use crate::scoring::{Parsed, Scoring};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub harness_version: String,
    pub edge_url: String,
    pub inputs: Vec<String>,
    pub modes: Vec<EvalMode>,
    /// The scoring of the headline figures; both are always in `modes[].strict/lenient`.
    pub scoring: Scoring,
    pub shuffle_seed: Option<u64>,
    pub limit: Option<usize>,
    pub items_per_mode: usize,
    /// Items left out by `--skip-missing-images`.
    #[serde(default)]
    pub skipped_missing_images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeReport {
    pub mode: EvalMode,
    /// The figures under the chosen scoring (what the Markdown table shows).
    pub headline: Vec<MetricRow>,
    pub strict: Vec<MetricRow>,
    pub lenient: Vec<MetricRow>,
    /// Recognition read off the small model's raw cue and off the reflected cue (paper
    /// Table 3's "Only M_s" and "M_s + M_l" views), where the edge returned cues.
    pub recognition_from_raw_cues: Vec<MetricRow>,
    pub recognition_from_refined_cues: Vec<MetricRow>,
    /// Headline scoring, sources pooled per task.
    pub per_concept: BTreeMap<String, Vec<MetricRow>>,
    pub per_category: BTreeMap<String, Vec<MetricRow>>,
    pub unparseable: u64,
    pub errors: u64,
    pub from_cache: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub meta: RunMeta,
    pub modes: Vec<ModeReport>,
    pub items: Vec<ItemRecord>,
}

fn vote(record: &ItemRecord, correct: bool) -> Vote {
    Vote {
        task: record.task,
        present: record.question.expected_answer == "yes",
        correct,
        unparseable: record.error.is_none() && record.parsed == Parsed::Unparseable,
        errored: record.error.is_some(),
    }
}

/// Votes for recognition read off a cue instead of the answer text.
fn cue_votes(
    records: &[&ItemRecord],
    pick: fn(&ItemRecord) -> Option<bool>,
) -> Vec<(String, Vote)> {
    records
        .iter()
        .filter(|r| r.task == Task::Recognition)
        .filter_map(|r| {
            let present = r.question.expected_answer == "yes";
            pick(r).map(|said| {
                (
                    r.source.clone(),
                    Vote {
                        task: Task::Recognition,
                        present,
                        correct: said == present,
                        unparseable: false,
                        errored: false,
                    },
                )
            })
        })
        .collect()
}

pub fn build_report(
    meta: RunMeta,
    records: Vec<ItemRecord>,
    categories: &BTreeMap<String, String>,
) -> Report {
    let mut modes = Vec::new();
    for &mode in &meta.modes {
        let records_of_mode: Vec<&ItemRecord> = records.iter().filter(|r| r.mode == mode).collect();
        let strict_votes: Vec<(String, Vote)> = records_of_mode
            .iter()
            .map(|r| (r.source.clone(), vote(r, r.correct)))
            .collect();
        let lenient_votes: Vec<(String, Vote)> = records_of_mode
            .iter()
            .map(|r| (r.source.clone(), vote(r, r.lenient_correct)))
            .collect();
        let headline_votes = match meta.scoring {
            Scoring::Strict => &strict_votes,
            Scoring::Lenient => &lenient_votes,
        };
        let mut concept_votes: BTreeMap<String, Vec<Vote>> = BTreeMap::new();
        let mut category_votes: BTreeMap<String, Vec<Vote>> = BTreeMap::new();
        for (record, (_, vote)) in records_of_mode.iter().zip(headline_votes) {
            let mut seen_categories = BTreeSet::new();
            for concept in &record.concepts {
                concept_votes
                    .entry(concept.clone())
                    .or_default()
                    .push(*vote);
                let category = categories
                    .get(concept)
                    .cloned()
                    .unwrap_or_else(|| "uncategorized".to_string());
                if seen_categories.insert(category.clone()) {
                    category_votes.entry(category).or_default().push(*vote);
                }
            }
        }
        modes.push(ModeReport {
            mode,
            headline: summarize(headline_votes),
            strict: summarize(&strict_votes),
            lenient: summarize(&lenient_votes),
            recognition_from_raw_cues: summarize(&cue_votes(&records_of_mode, |r| {
                r.cue_present_small
            })),
            recognition_from_refined_cues: summarize(&cue_votes(&records_of_mode, |r| {
                r.cue_present_refined
            })),
            per_concept: concept_votes
                .iter()
                .map(|(k, v)| (k.clone(), summarize_by_task(v)))
                .collect(),
            per_category: category_votes
                .iter()
                .map(|(k, v)| (k.clone(), summarize_by_task(v)))
                .collect(),
            unparseable: records_of_mode
                .iter()
                .filter(|r| r.error.is_none() && r.parsed == Parsed::Unparseable)
                .count() as u64,
            errors: records_of_mode.iter().filter(|r| r.error.is_some()).count() as u64,
            from_cache: records_of_mode.iter().filter(|r| r.from_cache).count() as u64,
        });
    }
    Report {
        meta,
        modes,
        items: records,
    }
}

pub fn mode_name(mode: EvalMode) -> String {
    serde_json::to_value(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{mode:?}"))
}

/// Paths of what [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenReport {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub charts: Vec<PathBuf>,
}

pub fn write_report(report: &Report, folder: &Path) -> Result<WrittenReport> {
    std::fs::create_dir_all(folder).map_err(|source| EvalError::io(folder, source))?;
    let json = folder.join("report.json");
    let body = serde_json::to_vec_pretty(report).expect("the report serializes");
    std::fs::write(&json, body).map_err(|source| EvalError::io(&json, source))?;
    let markdown = folder.join("summary.md");
    std::fs::write(&markdown, markdown::render(report))
        .map_err(|source| EvalError::io(&markdown, source))?;
    let mut charts = Vec::new();
    for mode_report in &report.modes {
        let path = folder.join(format!("chart-{}.png", mode_name(mode_report.mode)));
        chart::draw_mode_chart(mode_report, &path)?;
        charts.push(path);
    }
    Ok(WrittenReport {
        json,
        markdown,
        charts,
    })
}

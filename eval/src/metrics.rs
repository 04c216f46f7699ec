//! Proportions with Wilson 95% intervals, and the paper's figures built from them:
//! yes-recall, no-recall, weighted = 0.5·yes + 0.5·no, and accuracy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::items::Task;

/// The 97.5th percentile of the standard normal distribution.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// One reported number with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    /// Successes and trials behind a plain proportion; absent for the weighted mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<u64>,
}

/// Wilson score interval for `successes` out of `trials`; `None` without trials.
pub fn wilson_interval(successes: u64, trials: u64, z: f64) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half_width = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // At p = 0 and p = 1 the bound is exactly 0 or 1 in theory; say so instead of trusting
    // the last bit of floating point, so the interval always contains the estimate.
    let low = if successes == 0 {
        0.0
    } else {
        (center - half_width).clamp(0.0, p)
    };
    let high = if successes == trials {
        1.0
    } else {
        (center + half_width).clamp(p, 1.0)
    };
    Some((low, high))
}

pub fn proportion(successes: u64, trials: u64) -> Option<Figure> {
    let (low, high) = wilson_interval(successes, trials, Z_95)?;
    Some(Figure {
        value: successes as f64 / trials as f64,
        low,
        high,
        successes: Some(successes),
        trials: Some(trials),
    })
}

/// 0.5·a + 0.5·b with the MOVER interval (Zou & Donner 2008) built from the two Wilson
/// intervals: the honest interval for a mean of two independent proportions.
pub fn equal_weight_mean(a: &Figure, b: &Figure) -> Figure {
    let value = 0.5 * a.value + 0.5 * b.value;
    let below = ((0.5 * (a.value - a.low)).powi(2) + (0.5 * (b.value - b.low)).powi(2)).sqrt();
    let above = ((0.5 * (a.high - a.value)).powi(2) + (0.5 * (b.high - b.value)).powi(2)).sqrt();
    Figure {
        value,
        low: (value - below).max(0.0),
        high: (value + above).min(1.0),
        successes: None,
        trials: None,
    }
}

/// What one scored question contributes to the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub task: Task,
    /// For recognition: whether the concept was present. Ignored otherwise.
    pub present: bool,
    pub correct: bool,
    pub unparseable: bool,
    pub errored: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub trials: u64,
    pub correct: u64,
    /// Answers no parser could read; already counted wrong in `correct`.
    pub unparseable: u64,
    /// Requests that failed; already counted wrong in `correct`.
    pub errors: u64,
}

impl Tally {
    pub fn add(&mut self, vote: &Vote) {
        self.trials += 1;
        self.correct += u64::from(vote.correct);
        self.unparseable += u64::from(vote.unparseable);
        self.errors += u64::from(vote.errored);
    }
}

/// One line of a summary: a named figure for a task (and source, or "all").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub task: Task,
    pub source: String,
    /// `accuracy`, `yes_recall`, `no_recall` or `weighted`.
    pub metric: String,
    pub figure: Figure,
    pub trials: u64,
    pub unparseable: u64,
    pub errors: u64,
}

impl MetricRow {
    pub fn column_label(&self) -> String {
        let metric = match self.metric.as_str() {
            "accuracy" => "Acc",
            "yes_recall" => "Yes recall",
            "no_recall" => "No recall",
            "weighted" => "Weight",
            other => other,
        };
        if self.source == "all" {
            format!("{} {}", self.task.label(), metric)
        } else {
            format!("{} {} [{}]", self.task.label(), metric, self.source)
        }
    }
}

/// The rows for one group of votes of one task and source.
pub fn rows_for(task: Task, source: &str, votes: &[Vote]) -> Vec<MetricRow> {
    let row = |metric: &str, figure: Figure, tally: &Tally| MetricRow {
        task,
        source: source.to_string(),
        metric: metric.to_string(),
        figure,
        trials: tally.trials,
        unparseable: tally.unparseable,
        errors: tally.errors,
    };
    let mut rows = Vec::new();
    if task == Task::Recognition {
        let mut positive = Tally::default();
        let mut negative = Tally::default();
        for vote in votes {
            if vote.present {
                positive.add(vote);
            } else {
                negative.add(vote);
            }
        }
        let yes = proportion(positive.correct, positive.trials);
        let no = proportion(negative.correct, negative.trials);
        if let Some(yes) = yes {
            rows.push(row("yes_recall", yes, &positive));
        }
        if let Some(no) = no {
            rows.push(row("no_recall", no, &negative));
        }
        if let (Some(yes), Some(no)) = (yes, no) {
            let both = Tally {
                trials: positive.trials + negative.trials,
                correct: positive.correct + negative.correct,
                unparseable: positive.unparseable + negative.unparseable,
                errors: positive.errors + negative.errors,
            };
            rows.push(row("weighted", equal_weight_mean(&yes, &no), &both));
        }
    } else {
        let mut tally = Tally::default();
        votes.iter().for_each(|vote| tally.add(vote));
        if let Some(accuracy) = proportion(tally.correct, tally.trials) {
            rows.push(row("accuracy", accuracy, &tally));
        }
    }
    rows
}

/// Rows per (task, source), plus a pooled "all" row set per task when a task has several
/// sources (for example MC-LLaVA single and multi).
pub fn summarize(votes: &[(String, Vote)]) -> Vec<MetricRow> {
    let mut groups: BTreeMap<(Task, String), Vec<Vote>> = BTreeMap::new();
    let mut by_task: BTreeMap<Task, Vec<Vote>> = BTreeMap::new();
    for (source, vote) in votes {
        groups
            .entry((vote.task, source.clone()))
            .or_default()
            .push(*vote);
        by_task.entry(vote.task).or_default().push(*vote);
    }
    let mut rows = Vec::new();
    for (task, task_votes) in &by_task {
        let sources: Vec<&String> = groups
            .keys()
            .filter(|(t, _)| t == task)
            .map(|(_, s)| s)
            .collect();
        if sources.len() == 1 {
            rows.extend(rows_for(*task, sources[0], task_votes));
        } else {
            for source in sources {
                rows.extend(rows_for(*task, source, &groups[&(*task, source.clone())]));
            }
            rows.extend(rows_for(*task, "all", task_votes));
        }
    }
    rows
}

/// Rows per task only (sources pooled), for the per-concept and per-category breakdowns.
pub fn summarize_by_task(votes: &[Vote]) -> Vec<MetricRow> {
    let mut by_task: BTreeMap<Task, Vec<Vote>> = BTreeMap::new();
    for vote in votes {
        by_task.entry(vote.task).or_default().push(*vote);
    }
    by_task
        .iter()
        .flat_map(|(task, votes)| rows_for(*task, "all", votes))
        .collect()
}

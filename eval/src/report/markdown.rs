//! The summary table, one row per mode like the paper's Table 5, each cell
//! `value [low, high]` with the Wilson 95% interval.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Report, mode_name};
use crate::metrics::MetricRow;

fn cell(row: &MetricRow) -> String {
    format!(
        "{:.3} [{:.3}, {:.3}]",
        row.figure.value, row.figure.low, row.figure.high
    )
}

/// Columns in first-seen order across modes.
fn table(report: &Report, rows_of: impl Fn(&super::ModeReport) -> &Vec<MetricRow>) -> String {
    let mut columns: Vec<String> = Vec::new();
    for mode in &report.modes {
        for row in rows_of(mode) {
            let label = row.column_label();
            if !columns.contains(&label) {
                columns.push(label);
            }
        }
    }
    if columns.is_empty() {
        return "(no figures)\n".to_string();
    }
    let mut out = String::new();
    let _ = writeln!(out, "| mode | {} |", columns.join(" | "));
    let _ = writeln!(out, "| --- |{}", " --- |".repeat(columns.len()));
    for mode in &report.modes {
        let by_label: BTreeMap<String, &MetricRow> = rows_of(mode)
            .iter()
            .map(|r| (r.column_label(), r))
            .collect();
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                by_label
                    .get(c)
                    .map(|r| cell(r))
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", mode_name(mode.mode), cells.join(" | "));
    }
    out
}

fn breakdown(out: &mut String, title: &str, groups: &BTreeMap<String, Vec<MetricRow>>) {
    let _ = writeln!(out, "\n#### {title}\n");
    let _ = writeln!(out, "| {title} | figure | value [95% CI] | n |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (group, rows) in groups {
        for row in rows {
            let _ = writeln!(
                out,
                "| {group} | {} | {} | {} |",
                row.column_label(),
                cell(row),
                row.trials
            );
        }
    }
}

pub fn render(report: &Report) -> String {
    let meta = &report.meta;
    let mut out = String::new();
    let _ = writeln!(out, "# SLC evaluation\n");
    let _ = writeln!(out, "- edge: `{}`", meta.edge_url);
    let _ = writeln!(
        out,
        "- inputs: {}",
        meta.inputs
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "- items per mode: {}{}",
        meta.items_per_mode,
        meta.limit
            .map(|l| format!(" (--limit {l})"))
            .unwrap_or_default()
    );
    if !meta.skipped_missing_images.is_empty() {
        let _ = writeln!(
            out,
            "- left out (image missing): {}",
            meta.skipped_missing_images.len()
        );
    }
    let _ = writeln!(out, "- scoring: {:?}", meta.scoring);
    let _ = writeln!(
        out,
        "- options: {}",
        match meta.shuffle_seed {
            Some(seed) => format!("shuffled with seed {seed}"),
            None => "in the files' order".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "- figures: value [Wilson 95% interval]; Weight = 0.5·yes recall + 0.5·no recall, interval by MOVER\n"
    );
    let _ = writeln!(out, "## Headline ({:?} scoring)\n", meta.scoring);
    out.push_str(&table(report, |m| &m.headline));
    let _ = writeln!(
        out,
        "\n| mode | unparseable answers | failed requests | from cache |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for mode in &report.modes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            mode_name(mode.mode),
            mode.unparseable,
            mode.errors,
            mode.from_cache
        );
    }
    let _ = writeln!(
        out,
        "\nUnparseable answers and failed requests count as wrong.\n"
    );
    let _ = writeln!(out, "## Strict scoring\n");
    out.push_str(&table(report, |m| &m.strict));
    let _ = writeln!(
        out,
        "\n## Lenient scoring (the authors' substring match, for comparison)\n"
    );
    out.push_str(&table(report, |m| &m.lenient));
    if report
        .modes
        .iter()
        .any(|m| !m.recognition_from_raw_cues.is_empty())
    {
        let _ = writeln!(out, "\n## Recognition from the small model's raw cues\n");
        out.push_str(&table(report, |m| &m.recognition_from_raw_cues));
    }
    if report
        .modes
        .iter()
        .any(|m| !m.recognition_from_refined_cues.is_empty())
    {
        let _ = writeln!(out, "\n## Recognition from the reflected cues\n");
        out.push_str(&table(report, |m| &m.recognition_from_refined_cues));
    }
    let _ = writeln!(out, "\n## Breakdown ({:?} scoring)", meta.scoring);
    for mode in &report.modes {
        let _ = writeln!(out, "\n### {}", mode_name(mode.mode));
        breakdown(&mut out, "concept", &mode.per_concept);
        breakdown(&mut out, "category", &mode.per_category);
    }
    out
}

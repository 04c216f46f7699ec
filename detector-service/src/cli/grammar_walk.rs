//! A model that writes a known answer, token by token, under the cue-set grammar: the
//! benchmark's decode loop and the check that jump-forward's forced runs are the tokens the
//! model would have written itself.
//!
//! The "model" writes the canonical tokenization of the whole answer (`encode_plain` of the
//! text, then `<|im_end|>`), which is what a model trained on tokenized text produces. At every
//! step the grammar first offers its forced run; a run equal to the next canonical tokens is
//! what jump-forward must give. Otherwise the next canonical token must be in the mask.

use std::time::{Duration, Instant};

use serde_json::Value;
use slc_engine::constrain::{Constraint, ConstraintVocabulary, Grammar};
use slc_engine::tokenizer::QwenTokenizer;

/// One forced run and the tokens the model would have written in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedRun {
    /// Index into the answer's canonical ids where the run starts.
    pub at: usize,
    pub forced: Vec<u32>,
    pub canonical: Vec<u32>,
}

impl ForcedRun {
    pub fn matches(&self) -> bool {
        self.forced == self.canonical
    }
}

#[derive(Debug, Default)]
pub struct WalkReport {
    /// Time of each mask computation (one per sampled token).
    pub mask_times: Vec<Duration>,
    /// Time of each forced-run computation (one per step).
    pub forced_times: Vec<Duration>,
    pub sampled_tokens: usize,
    pub forced_tokens: usize,
    pub forced_runs: Vec<ForcedRun>,
    /// The text the walk wrote (`<|im_end|>` excluded).
    pub text: String,
}

/// Writes `answer` under `grammar`; fails when the grammar refuses a canonical token.
pub fn walk_answer(
    tokenizer: &QwenTokenizer,
    vocabulary: &ConstraintVocabulary,
    grammar: &Grammar,
    answer: &str,
) -> anyhow::Result<WalkReport> {
    let mut constraint = Constraint::new(vocabulary, grammar)?;
    let mut target = tokenizer.encode_plain(answer)?;
    target.push(vocabulary.end_of_turn());
    let mut written: Vec<u32> = Vec::with_capacity(target.len());
    let mut report = WalkReport::default();
    while written.len() < target.len() {
        let started = Instant::now();
        let forced = constraint.forced_tokens();
        report.forced_times.push(started.elapsed());
        if !forced.is_empty() {
            let at = written.len();
            let end = (at + forced.len()).min(target.len());
            let run = ForcedRun {
                at,
                forced: forced.clone(),
                canonical: target[at..end].to_vec(),
            };
            let diverged = !run.matches();
            report.forced_runs.push(run);
            constraint.commit_forced(&forced)?;
            report.forced_tokens += forced.len();
            written.extend_from_slice(&forced);
            if diverged {
                // Carry on from the text written so far, so timings cover the whole answer.
                let so_far = tokenizer.decode(&written, false)?;
                let rest = answer.strip_prefix(so_far.as_str()).ok_or_else(|| {
                    anyhow::anyhow!("forced text {so_far:?} is not a prefix of the answer")
                })?;
                target.clear();
                target.extend_from_slice(&written);
                target.extend(tokenizer.encode_plain(rest)?);
                target.push(vocabulary.end_of_turn());
            }
            continue;
        }
        let started = Instant::now();
        let mask = constraint.allowed_tokens()?;
        report.mask_times.push(started.elapsed());
        let next = target[written.len()];
        anyhow::ensure!(
            mask.is_allowed(next),
            "the grammar refuses token {next} ({:?}) after {:?}",
            tokenizer.decode(&[next], false)?,
            tokenizer.decode(&written, false)?
        );
        constraint.commit(&[next])?;
        report.sampled_tokens += 1;
        written.push(next);
    }
    written.pop();
    report.text = tokenizer.decode(&written, false)?;
    anyhow::ensure!(report.text == answer, "wrote {:?}", report.text);
    Ok(report)
}

/// Example locations, cut to the schema's length.
const ABSOLUTE: [&str; 4] = [
    "top-left quadrant",
    "center of the image",
    "bottom right corner, on the floor",
    "upper half, slightly left",
];
const RELATIVE: [&str; 4] = [
    "to the left of the person in black suit",
    "next to the red cup on the wooden table",
    "behind the sofa, partly hidden",
    "in front of the window",
];

/// A cue set the schema admits for its ids, in the schema's key order: two of every three
/// concepts present with both locations, the third absent.
pub fn sample_cue_set(schema: &Value, location_chars: usize) -> String {
    let cut = |text: &str| text.chars().take(location_chars).collect::<String>();
    let ids = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let present_keys: Vec<String> = ids
        .first()
        .and_then(|id| schema["properties"][id]["anyOf"][0]["properties"].as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let entries: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| {
            let body = if index % 3 == 2 {
                r#""present": false"#.to_string()
            } else {
                let fields: Vec<String> = present_keys
                    .iter()
                    .map(|key| match key.as_str() {
                        "present" => r#""present": true"#.to_string(),
                        "location-absolute" => {
                            format!(r#""{key}": "{}""#, cut(ABSOLUTE[index % 4]))
                        }
                        _ => format!(r#""{key}": "{}""#, cut(RELATIVE[index % 4])),
                    })
                    .collect();
                fields.join(", ")
            };
            format!(r#""{id}": {{{body}}}"#)
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// Bracketed concept ids like the sample data's (`<bo>`, `<cat-cup>`), `count` of them.
pub fn sample_ids(count: usize) -> Vec<String> {
    const NAMES: [&str; 10] = [
        "bo",
        "brown-duck",
        "butin",
        "cat-cup",
        "chua-thien-mu",
        "ciin",
        "denisdang",
        "dragon",
        "duck-banana",
        "mam",
    ];
    (0..count)
        .map(|i| match i / NAMES.len() {
            0 => format!("<{}>", NAMES[i]),
            round => format!("<{}-{round}>", NAMES[i % NAMES.len()]),
        })
        .collect()
}

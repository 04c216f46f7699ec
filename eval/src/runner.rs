//! The run loop: every (mode, item) pair becomes one `POST /v1/ask`, at most `concurrency`
//! at a time, answered from the disk cache when the same request was made before.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use shared_types::{AskRequest, AskResponse};

use crate::EvalMode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cache::ResponseCache;
use crate::client::EdgeClient;
use crate::error::{EvalError, Result};
use crate::items::{EvalItem, Expected, Task, option_letter};
use crate::options::{apply_permutation, render_choice_question, shuffle_permutation};
use crate::scoring::{
    Parsed, lenient_choice_correct, lenient_presence_correct, parse_choice, parse_yes_no,
};

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub modes: Vec<EvalMode>,
    /// `Some(seed)` permutes every multiple-choice item's options.
    pub shuffle_seed: Option<u64>,
    pub concurrency: usize,
    pub pseudonymize: bool,
    pub batched_verification: bool,
    pub max_answer_tokens: Option<u32>,
    pub show_progress: bool,
}

/// The question as this run asks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedQuestion {
    pub text: String,
    /// Options in the order shown; absent for recognition.
    pub shown_options: Option<Vec<String>>,
    /// `shown[i] = original[permutation[i]]`; absent when not shuffled.
    pub permutation: Option<Vec<usize>>,
    /// Index of the right option as shown.
    pub correct_shown: Option<usize>,
    /// "yes", "no" or the letter as shown.
    pub expected_answer: String,
}

pub fn prepare_question(item: &EvalItem, shuffle_seed: Option<u64>) -> PreparedQuestion {
    match &item.expected {
        Expected::Presence { present } => PreparedQuestion {
            text: item.original_question.clone(),
            shown_options: None,
            permutation: None,
            correct_shown: None,
            expected_answer: if *present { "yes" } else { "no" }.to_string(),
        },
        Expected::Choice {
            stem,
            options,
            correct,
            instruction,
        } => match shuffle_seed {
            None => PreparedQuestion {
                // Unshuffled runs send the file's text verbatim, as the authors asked it.
                text: item.original_question.clone(),
                shown_options: Some(options.clone()),
                permutation: None,
                correct_shown: Some(*correct),
                expected_answer: option_letter(*correct).to_string(),
            },
            Some(seed) => {
                let permutation = shuffle_permutation(seed, &item.id, options.len());
                let (shown, correct_shown) = apply_permutation(options, *correct, &permutation);
                PreparedQuestion {
                    text: render_choice_question(stem, &shown, instruction.as_deref()),
                    shown_options: Some(shown),
                    permutation: Some(permutation),
                    correct_shown: Some(correct_shown),
                    expected_answer: option_letter(correct_shown).to_string(),
                }
            }
        },
    }
}

/// Strict parse, strict verdict and the authors' lenient verdict for one answer.
pub fn judge(item: &EvalItem, prepared: &PreparedQuestion, answer: &str) -> (Parsed, bool, bool) {
    match &item.expected {
        Expected::Presence { present } => {
            let parsed = parse_yes_no(answer);
            let strict = matches!((parsed, present), (Parsed::Yes, true) | (Parsed::No, false));
            (parsed, strict, lenient_presence_correct(answer, *present))
        }
        Expected::Choice { .. } => {
            let shown = prepared.shown_options.as_deref().unwrap_or_default();
            let correct = prepared
                .correct_shown
                .expect("choices have a correct option");
            let parsed = parse_choice(answer, shown);
            let strict = parsed == Parsed::Choice(correct);
            (
                parsed,
                strict,
                lenient_choice_correct(answer, option_letter(correct)),
            )
        }
    }
}

/// Everything the report keeps about one asked question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub mode: EvalMode,
    pub id: String,
    pub task: Task,
    pub source: String,
    pub concepts: Vec<String>,
    pub image: Option<PathBuf>,
    pub question: PreparedQuestion,
    pub answer: Option<String>,
    pub parsed: Parsed,
    pub correct: bool,
    pub lenient_correct: bool,
    pub error: Option<String>,
    pub from_cache: bool,
    pub request_hash: String,
    /// Recognition only: what the small model's raw cue said about the concept.
    pub cue_present_small: Option<bool>,
    /// Recognition only: the cue after the large model's reflection.
    pub cue_present_refined: Option<bool>,
    pub total_ms: Option<f64>,
}

pub fn build_request(
    item: &EvalItem,
    prepared: &PreparedQuestion,
    mode: EvalMode,
    settings: &RunSettings,
) -> Result<AskRequest> {
    let image = match &item.image_path {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| EvalError::io(path, source))?;
            Some(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        None if item.image_reference.is_some() => {
            return Err(EvalError::bad_item(&item.id, "the image was not resolved"));
        }
        None => None,
    };
    Ok(AskRequest {
        image,
        question: prepared.text.clone(),
        // Always named: the paper's protocol fixes each item's concepts, so the edge's
        // default rule (every registered concept) must not apply.
        concepts: Some(item.concepts.clone()),
        scenario: None,
        conversation_id: None,
        mode: mode.wire_mode(),
        pseudonymize: settings.pseudonymize,
        batched_verification: settings.batched_verification,
        stream: false,
        max_answer_tokens: settings.max_answer_tokens,
        recheck_mentioned: mode.rechecks_mentioned(),
        boxes: false,
    })
}

fn cue_presence(cues: Option<&shared_types::CueSet>, concept: &str) -> Option<bool> {
    let cues = cues?;
    Some(
        cues.get(&format!("<{concept}>"))
            .or_else(|| cues.get(concept))
            .is_some_and(|cue| cue.present),
    )
}

fn record(
    item: &EvalItem,
    mode: EvalMode,
    prepared: PreparedQuestion,
    request_hash: String,
    outcome: std::result::Result<(AskResponse, bool), String>,
) -> ItemRecord {
    let mut record = ItemRecord {
        mode,
        id: item.id.clone(),
        task: item.task,
        source: item.source.clone(),
        concepts: item.concepts.clone(),
        image: item.image_path.clone(),
        question: prepared,
        answer: None,
        parsed: Parsed::Unparseable,
        correct: false,
        lenient_correct: false,
        error: None,
        from_cache: false,
        request_hash,
        cue_present_small: None,
        cue_present_refined: None,
        total_ms: None,
    };
    match outcome {
        Err(message) => record.error = Some(message),
        Ok((response, from_cache)) => {
            let (parsed, strict, lenient) = judge(item, &record.question, &response.answer);
            record.parsed = parsed;
            record.correct = strict;
            record.lenient_correct = lenient;
            record.from_cache = from_cache;
            record.total_ms = Some(response.timings.total_ms);
            if item.task == Task::Recognition {
                let concept = &item.concepts[0];
                record.cue_present_small = cue_presence(response.raw_cues.as_ref(), concept);
                record.cue_present_refined =
                    cue_presence(response.reasoning.refined_cues.as_ref(), concept);
            }
            record.answer = Some(response.answer);
        }
    }
    record
}

/// Asks every item in every mode. Failed requests become records with `error` set (and
/// count as wrong); nothing is cached for them, so the next run asks them again.
pub async fn run_items(
    client: &EdgeClient,
    cache: &ResponseCache,
    items: &[EvalItem],
    settings: &RunSettings,
) -> Result<Vec<ItemRecord>> {
    let total = (items.len() * settings.modes.len()) as u64;
    let progress = if settings.show_progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let items: Arc<Vec<EvalItem>> = Arc::new(items.to_vec());
    let mut tasks = JoinSet::new();
    let mut job = 0usize;
    for &mode in &settings.modes {
        for index in 0..items.len() {
            let item = &items[index];
            let prepared = prepare_question(item, settings.shuffle_seed);
            let (client, cache, items, semaphore, progress, settings) = (
                client.clone(),
                cache.clone(),
                items.clone(),
                semaphore.clone(),
                progress.clone(),
                settings.clone(),
            );
            let job_index = job;
            job += 1;
            tasks.spawn(async move {
                let item = &items[index];
                // The permit also bounds how many encoded images are in memory at once.
                let _permit = semaphore.acquire().await.expect("never closed");
                let (hash, outcome) = match build_request(item, &prepared, mode, &settings) {
                    Err(e) => (String::new(), Err(e.to_string())),
                    Ok(request) => {
                        let hash = cache.request_hash(&request);
                        let outcome = match cache.get(&hash) {
                            Some(response) => Ok((response, true)),
                            None => match client.ask(&item.id, &request).await {
                                Ok(response) => match cache.put(&hash, &response) {
                                    Ok(()) => Ok((response, false)),
                                    Err(e) => Err(e.to_string()),
                                },
                                Err(e) => Err(e.to_string()),
                            },
                        };
                        (hash, outcome)
                    }
                };
                if let Err(message) = &outcome {
                    progress.println(format!("error: {message}"));
                }
                progress.inc(1);
                (job_index, record(item, mode, prepared, hash, outcome))
            });
        }
    }
    let mut records: Vec<Option<ItemRecord>> = vec![None; job];
    while let Some(joined) = tasks.join_next().await {
        let (index, record) =
            joined.map_err(|e| EvalError::Internal(format!("a request task failed: {e}")))?;
        records[index] = Some(record);
    }
    progress.finish_and_clear();
    Ok(records
        .into_iter()
        .map(|r| r.expect("every job reports"))
        .collect())
}

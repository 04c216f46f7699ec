//! The harness against an edge on loopback: registration, what each request carried,
//! shuffling, scoring, caching and resumption, and the report files.
//!
//! `against_the_real_services` runs the harness against both real binaries; the scripted edge
//! serves everything else.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use clap::Parser;
use shared_types::Concept;
use slc_eval::EvalMode;
use slc_eval::config::{Cli, Command, RunConfig};
use slc_eval::items::{Expected, Task};
use slc_eval::report::Report;
use slc_eval::run::{collect_items, execute};
use slc_eval::scoring::Parsed;

use crate::scripted_edge::{EdgeState, sha256_hex, spawn_scripted_edge, truth_key};
use crate::shared_data;

fn run_config(edge_url: &str, out: &Path, extra: &[&str]) -> RunConfig {
    let data = shared_data();
    let mut args: Vec<String> = vec![
        "slc-eval".into(),
        "run".into(),
        "--edge-url".into(),
        edge_url.into(),
        "--dataset-root".into(),
        data.display().to_string(),
        "--concepts-file".into(),
        data.join("concepts/database.json").display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--no-progress".into(),
    ];
    if !extra.contains(&"--only-concepts") {
        args.extend(["--only-concepts".to_string(), "bo".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    match Cli::try_parse_from(args).unwrap().command {
        Command::Run(config) => *config,
        other => panic!("{other:?}"),
    }
}

fn standard_inputs(data: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for file in ["vqa", "qa", "sqa"] {
        args.push("--input".to_string());
        args.push(
            data.join(format!("eval/slc/yollava_eval/{file}.json"))
                .display()
                .to_string(),
        );
    }
    for (flag, path) in [
        ("--positives", "yollava/test/bo"),
        ("--negatives", "yollava/negatives"),
    ] {
        args.push(flag.into());
        args.push(data.join(path).display().to_string());
    }
    args.push("--recognition-concept".into());
    args.push("bo".into());
    // The sample holds five of <bo>'s test images; the authors' files name others too.
    args.push("--skip-missing-images".into());
    args
}

/// The items a run will ask, images resolved, as `execute` selects them.
fn resolved_items(config: &RunConfig) -> Vec<slc_eval::items::EvalItem> {
    let (mut items, _) = collect_items(config).unwrap();
    let root = slc_eval::dataset_root::DatasetRoot::new(
        config.dataset_root.clone(),
        config.path_maps.clone(),
    );
    if config.skip_missing_images {
        root.resolve_items_dropping_missing(&mut items);
    } else {
        root.resolve_items(&mut items).unwrap();
    }
    items
}

/// The edge knows the right option text of every multiple-choice item and which images show
/// `<bo>`, so its answers are right exactly when the harness tracked the options correctly.
fn scripted_state(config: &RunConfig) -> EdgeState {
    let items = resolved_items(config);
    let mut state = EdgeState::default();
    for item in &items {
        if let Expected::Choice {
            stem,
            options,
            correct,
            ..
        } = &item.expected
        {
            let image = item
                .image_path
                .as_ref()
                .map(|p| sha256_hex(&std::fs::read(p).unwrap()));
            let key = truth_key(stem, options, image.as_deref());
            let previous = state.truths.insert(key, options[*correct].clone());
            assert!(
                previous.is_none_or(|p| p == options[*correct]),
                "ambiguous item {}",
                item.id
            );
        }
    }
    for image in
        slc_eval::readers::recognition::list_images(&shared_data().join("yollava/test/bo")).unwrap()
    {
        state
            .positive_images
            .insert(sha256_hex(&std::fs::read(image).unwrap()));
    }
    state
}

fn figure(report: &Report, mode: EvalMode, lenient: bool, task: Task, metric: &str) -> f64 {
    let mode_report = report.modes.iter().find(|m| m.mode == mode).unwrap();
    let rows = if lenient {
        &mode_report.lenient
    } else {
        &mode_report.strict
    };
    rows.iter()
        .find(|r| r.task == task && r.metric == metric)
        .unwrap_or_else(|| panic!("no {task:?} {metric} in {mode:?}"))
        .figure
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_against_the_scripted_edge() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let mut extra: Vec<String> = standard_inputs(&data);
    extra.extend(
        [
            "--modes",
            "full,pure",
            "--shuffle-options",
            "--seed",
            "5",
            "--concurrency",
            "3",
        ]
        .map(String::from),
    );
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let placeholder = run_config("http://127.0.0.1:9", out.path(), &extra);
    let mut state = scripted_state(&placeholder);
    // One visual question fails once: the first run reports it, the second resumes.
    let items = resolved_items(&placeholder);
    assert!(items.iter().any(|i| i.task == Task::SpecialQuestions));
    let flaky = items
        .iter()
        .find(|i| i.task == Task::VisualMultipleChoice)
        .unwrap();
    let Expected::Choice {
        stem: flaky_stem, ..
    } = &flaky.expected
    else {
        unreachable!()
    };
    state.fail_once.insert(flaky_stem.clone());
    let edge = spawn_scripted_edge(state).await;
    let config = run_config(&edge.url, out.path(), &extra);

    let first = execute(&config).await.unwrap();
    let per_mode = first.report.meta.items_per_mode;
    assert_eq!(per_mode, items.len());
    assert_eq!(first.report.items.len(), 2 * per_mode);
    assert_eq!(first.errors(), 1, "the scripted 503 is reported");
    assert!(!first.report.meta.skipped_missing_images.is_empty());
    let failed = first
        .report
        .items
        .iter()
        .find(|r| r.error.is_some())
        .unwrap();
    assert_eq!(failed.id, flaky.id);
    assert!(
        failed.error.as_ref().unwrap().contains(&flaky.id),
        "{:?}",
        failed.error
    );
    assert!(!failed.correct);

    {
        let state = edge.state.lock().unwrap();
        // Registration: bo only, with the file's description and its reference image.
        assert_eq!(state.created.len(), 1);
        let created = &state.created[0];
        assert_eq!(created.id, "bo");
        assert!(
            created
                .description
                .starts_with("<bo> is a well-groomed, medium-sized Shiba Inu")
        );
        let image = base64::engine::general_purpose::STANDARD
            .decode(&created.images[0])
            .unwrap();
        assert_eq!(image, std::fs::read(data.join("concepts/bo.jpg")).unwrap());
        // One request per item and mode, plus the failed one asked again below.
        assert_eq!(state.asks.len(), 2 * per_mode);
        let mut asked: HashMap<(EvalMode, String), Vec<&shared_types::AskRequest>> = HashMap::new();
        for request in &state.asks {
            asked
                .entry((EvalMode::from(request.mode), request.question.clone()))
                .or_default()
                .push(request);
        }
        let mut permuted = 0;
        for record in &first.report.items {
            let requests = &asked[&(record.mode, record.question.text.clone())];
            let matching = requests.iter().any(|request| {
                request.concepts == Some(vec!["bo".to_string()])
                    && !request.stream
                    && match (&record.image, &request.image) {
                        (Some(path), Some(image)) => {
                            base64::engine::general_purpose::STANDARD
                                .decode(image)
                                .unwrap()
                                == std::fs::read(path).unwrap()
                        }
                        (None, None) => true,
                        _ => false,
                    }
            });
            assert!(
                matching,
                "no request carried {}'s question, image and concept",
                record.id
            );
            if record.task == Task::TextMultipleChoice {
                assert!(record.image.is_none());
            } else {
                assert!(record.image.is_some());
            }
            if let Some(permutation) = &record.question.permutation
                && permutation.iter().enumerate().any(|(i, &p)| i != p)
            {
                permuted += 1;
            }
        }
        assert!(permuted > 0, "the seed must reorder some options");
    }

    let report = &first.report;
    // Full mode answers every multiple-choice item right after shuffling, except the
    // failed one: the harness tracked each correct option through its permutation.
    let visual: Vec<_> = report
        .items
        .iter()
        .filter(|r| r.mode == EvalMode::Full && r.task == Task::VisualMultipleChoice)
        .collect();
    let visual_accuracy = figure(
        report,
        EvalMode::Full,
        false,
        Task::VisualMultipleChoice,
        "accuracy",
    );
    assert!((visual_accuracy - (visual.len() - 1) as f64 / visual.len() as f64).abs() < 1e-12);
    assert_eq!(
        figure(
            report,
            EvalMode::Full,
            false,
            Task::TextMultipleChoice,
            "accuracy"
        ),
        1.0
    );
    assert_eq!(
        figure(
            report,
            EvalMode::Full,
            false,
            Task::SpecialQuestions,
            "accuracy"
        ),
        1.0
    );
    assert_eq!(
        figure(
            report,
            EvalMode::Full,
            false,
            Task::Recognition,
            "yes_recall"
        ),
        1.0
    );
    assert_eq!(
        figure(
            report,
            EvalMode::Full,
            false,
            Task::Recognition,
            "no_recall"
        ),
        1.0
    );
    assert_eq!(
        figure(report, EvalMode::Full, false, Task::Recognition, "weighted"),
        1.0
    );
    // Pure mode always says "A": right exactly where the shuffled key is A.
    let pure_text: Vec<_> = report
        .items
        .iter()
        .filter(|r| r.mode == EvalMode::Pure && r.task == Task::TextMultipleChoice)
        .collect();
    let keyed_a = pure_text
        .iter()
        .filter(|r| r.question.expected_answer == "A")
        .count();
    assert!(
        keyed_a < pure_text.len(),
        "shuffling must move some keys off A"
    );
    let pure_accuracy = figure(
        report,
        EvalMode::Pure,
        false,
        Task::TextMultipleChoice,
        "accuracy",
    );
    assert!((pure_accuracy - keyed_a as f64 / pure_text.len() as f64).abs() < 1e-12);
    // Pure mode answers recognition "I don't know.": strictly unparseable, so wrong; the
    // authors' substring test reads "know" as "no" and scores every negative right.
    let pure_report = report
        .modes
        .iter()
        .find(|m| m.mode == EvalMode::Pure)
        .unwrap();
    assert_eq!(pure_report.unparseable, 24);
    assert!(
        report
            .items
            .iter()
            .filter(|r| r.mode == EvalMode::Pure && r.task == Task::Recognition)
            .all(|r| r.parsed == Parsed::Unparseable)
    );
    assert_eq!(
        figure(
            report,
            EvalMode::Pure,
            false,
            Task::Recognition,
            "no_recall"
        ),
        0.0
    );
    assert_eq!(
        figure(report, EvalMode::Pure, true, Task::Recognition, "no_recall"),
        1.0
    );
    assert_eq!(
        figure(
            report,
            EvalMode::Pure,
            true,
            Task::Recognition,
            "yes_recall"
        ),
        0.0
    );
    // Recognition from the cues the edge returned: raw cues only in modes with detection.
    let full_report = report
        .modes
        .iter()
        .find(|m| m.mode == EvalMode::Full)
        .unwrap();
    assert_eq!(
        full_report
            .recognition_from_raw_cues
            .iter()
            .find(|r| r.metric == "weighted")
            .unwrap()
            .figure
            .value,
        1.0
    );
    assert!(pure_report.recognition_from_raw_cues.is_empty());
    // Per concept and per category (database.json says bo is a dog).
    assert!(full_report.per_concept.contains_key("bo"));
    assert!(full_report.per_category.contains_key("dog"));
    // Every figure carries its interval.
    for row in full_report.strict.iter().chain(&pure_report.lenient) {
        assert!(
            row.figure.low <= row.figure.value && row.figure.value <= row.figure.high,
            "{row:?}"
        );
    }

    // Files: JSON round-trips to the same report, Markdown has a row per mode, charts decode.
    let written: Report =
        serde_json::from_slice(&std::fs::read(&first.written.json).unwrap()).unwrap();
    // (Figures go through decimal text, so compare the exact parts exactly.)
    assert!(
        written.items == report.items && written.meta == report.meta,
        "report.json differs from the run"
    );
    assert_eq!(written.modes.len(), 2);
    for (read, made) in written.modes.iter().zip(&report.modes) {
        assert_eq!(read.strict.len(), made.strict.len());
        for (a, b) in read.strict.iter().zip(&made.strict) {
            assert!((a.figure.value - b.figure.value).abs() < 1e-12 && a.trials == b.trials);
        }
    }
    let markdown = std::fs::read_to_string(&first.written.markdown).unwrap();
    assert!(
        markdown.contains("| full |") && markdown.contains("| pure |"),
        "{markdown}"
    );
    assert!(markdown.contains("Rec. Weight"), "{markdown}");
    assert_eq!(first.written.charts.len(), 2);
    for chart in &first.written.charts {
        let image = image::open(chart).unwrap().to_rgb8();
        assert_eq!(image.width(), 1000);
        assert!(
            image.pixels().any(|p| p.0 == [70, 120, 190]),
            "{} has no bars",
            chart.display()
        );
    }

    // `SLC_EVAL_TEST_KEEP_REPORT=DIR` keeps the files for a look.
    if let Ok(keep) = std::env::var("SLC_EVAL_TEST_KEEP_REPORT") {
        std::fs::create_dir_all(&keep).unwrap();
        for path in [&first.written.json, &first.written.markdown]
            .into_iter()
            .chain(&first.written.charts)
        {
            std::fs::copy(path, Path::new(&keep).join(path.file_name().unwrap())).unwrap();
        }
    }

    // Resume: same flags, same output folder. Only the failed request goes out again, the
    // concept is already there, and the figures are complete.
    let second = execute(&config).await.unwrap();
    assert_eq!(second.errors(), 0);
    let state = edge.state.lock().unwrap();
    assert_eq!(state.asks.len(), 2 * per_mode + 1);
    assert_eq!(state.created.len(), 1);
    assert!(state.updated.is_empty());
    drop(state);
    let cached: u64 = second.report.modes.iter().map(|m| m.from_cache).sum();
    assert_eq!(cached as usize, 2 * per_mode - 1);
    assert_eq!(
        figure(
            &second.report,
            EvalMode::Full,
            false,
            Task::VisualMultipleChoice,
            "accuracy"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_updates_a_changed_concept_and_sends_the_files_text_unshuffled() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let vqa = data
        .join("eval/slc/yollava_eval/vqa.json")
        .display()
        .to_string();
    let extra = [
        "--input",
        &vqa,
        "--limit",
        "2",
        "--modes",
        "no_reflection,no_detector",
    ];
    let placeholder = run_config("http://127.0.0.1:9", out.path(), &extra);
    let mut state = scripted_state(&placeholder);
    state.concepts.insert(
        "bo".into(),
        Concept {
            id: "bo".into(),
            description: "an outdated description".into(),
            images: vec![],
            created_at: String::new(),
            updated_at: String::new(),
            adapter: None,
        },
    );
    let edge = spawn_scripted_edge(state).await;
    let config = run_config(&edge.url, out.path(), &extra);
    let outcome = execute(&config).await.unwrap();
    assert_eq!(outcome.report.meta.items_per_mode, 2);
    let state = edge.state.lock().unwrap();
    assert!(state.created.is_empty());
    assert_eq!(state.updated.len(), 1);
    assert!(state.updated[0].1.description.contains("Shiba Inu"));
    assert_eq!(state.asks.len(), 4);
    let (items, _) = collect_items(&config).unwrap();
    for request in &state.asks {
        assert!(matches!(
            request.mode,
            shared_types::Mode::NoReflection | shared_types::Mode::NoDetector
        ));
        assert!(
            items
                .iter()
                .any(|i| i.original_question == request.question),
            "{}",
            request.question
        );
    }
}

#[tokio::test]
async fn missing_images_and_unknown_concepts_stop_before_any_request() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let edge = spawn_scripted_edge(EdgeState::default()).await;
    let vqa = data
        .join("eval/slc/yollava_eval/vqa.json")
        .display()
        .to_string();
    // shiba-gray's images are not in the sample data.
    let config = run_config(
        &edge.url,
        out.path(),
        &[
            "--input",
            &vqa,
            "--only-concepts",
            "shiba-gray",
            "--skip-unregistered",
        ],
    );
    let error = execute(&config).await.unwrap_err().to_string();
    assert!(error.contains("no items left"), "{error}");
    let mut args = vec!["--input", &vqa];
    args.extend(["--only-concepts", "bo,shiba-gray"]);
    let mut config = run_config(&edge.url, out.path(), &args);
    config.concepts_file = None;
    let error = execute(&config).await.unwrap_err().to_string();
    // Without a concepts file nothing is checked against it; the first missing image stops.
    assert!(
        error.contains("item vqa:bo:2") && error.contains("yollava/test/bo/6.jpg"),
        "{error}"
    );
    let config = run_config(&edge.url, out.path(), &args);
    let error = execute(&config).await.unwrap_err().to_string();
    assert!(
        error.contains("shiba-gray") && error.contains("database.json"),
        "{error}"
    );
    assert!(edge.state.lock().unwrap().asks.is_empty());
}

/// The harness against the real service pair (both binaries on loopback, the tiny checkpoint,
/// the reasoner using the edge's own model): every input format and mode on a few `<bo>`
/// items, with the concepts registered by the run. The answers of a random-weight model are
/// noise, so this checks that every request succeeds and the report is complete, not scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_real_services() {
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let stack = slc_e2e::Stack::start(slc_e2e::StackOptions::new(bin_dir))
        .await
        .expect("starting slc-detector and slc-reasoner (cargo build --bins)");
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let mut extra = standard_inputs(&data);
    extra.extend(
        [
            "--limit",
            "2",
            "--modes",
            "full,no_reflection,no_detector,pure",
            "--api-key",
            slc_e2e::APP_KEY,
            "--max-answer-tokens",
            "8",
        ]
        .map(String::from),
    );
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let config = run_config(&stack.edge_url, out.path(), &extra);
    let outcome = execute(&config).await.unwrap();
    let errors: Vec<_> = outcome
        .report
        .items
        .iter()
        .filter_map(|r| r.error.as_ref())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    for mode in [
        EvalMode::Full,
        EvalMode::NoReflection,
        EvalMode::NoDetector,
        EvalMode::Pure,
    ] {
        assert!(
            outcome.report.items.iter().any(|r| r.mode == mode),
            "{mode:?} ran"
        );
    }
    assert!(
        outcome.report.items.len() >= 4 * 4,
        "items of every input in every mode"
    );
    assert!(outcome.written.markdown.is_file() && outcome.written.json.is_file());
    println!(
        "{}",
        std::fs::read_to_string(&outcome.written.markdown).unwrap()
    );
    stack.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_limit_bounds_requests_in_flight() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let qa = data
        .join("eval/slc/yollava_eval/qa.json")
        .display()
        .to_string();
    let extra = ["--input", &qa, "--concurrency", "3", "--modes", "full,pure"];
    let placeholder = run_config("http://127.0.0.1:9", out.path(), &extra);
    let mut state = scripted_state(&placeholder);
    state.ask_delay = std::time::Duration::from_millis(40);
    let edge = spawn_scripted_edge(state).await;
    let config = run_config(&edge.url, out.path(), &extra);
    let outcome = execute(&config).await.unwrap();
    assert_eq!(outcome.report.items.len(), 20);
    let most = edge
        .in_flight
        .most
        .load(std::sync::atomic::Ordering::SeqCst);
    // 20 requests of 40 ms each: a serial harness would never overlap, an unbounded one
    // would have all 20 in flight.
    assert_eq!(
        most, 3,
        "at most --concurrency requests in flight, and the limit is used"
    );
}

#[test]
fn cli_definition_is_consistent_and_reads_the_environment() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let config = match Cli::try_parse_from([
        "slc-eval",
        "run",
        "--modes",
        "full,no_reflection,no_detector,pure",
    ])
    .unwrap()
    .command
    {
        Command::Run(config) => config,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        config.modes,
        vec![
            EvalMode::Full,
            EvalMode::NoReflection,
            EvalMode::NoDetector,
            EvalMode::Pure
        ]
    );
    assert_eq!(
        config.path_maps,
        vec![("yollava-data".to_string(), "yollava".to_string())]
    );
    let error = Cli::try_parse_from(["slc-eval", "run", "--modes", "fast"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown mode \"fast\""), "{error}");
    let error = Cli::try_parse_from(["slc-eval", "run", "--positives", "x"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("--negatives"), "{error}");
}

#[test]
fn binary_writes_recognition_files_and_names_bad_inputs() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_slc-eval");
    let file = out.path().join("rec.json");
    let status = std::process::Command::new(binary)
        .args(["make-recognition", "--test-folders"])
        .arg(data.join("yollava/test"))
        .arg("--dataset-root")
        .arg(&data)
        .arg("--out")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["format"], "slc-eval-recognition/1");
    assert_eq!(
        written["items"].as_array().unwrap().len(),
        5,
        "one concept folder, five images"
    );
    let bad = out.path().join("weird.json");
    std::fs::write(&bad, "[1]").unwrap();
    let output = std::process::Command::new(binary)
        .args([
            "run",
            "--no-progress",
            "--edge-url",
            "http://127.0.0.1:9",
            "--input",
        ])
        .arg(&bad)
        .env_remove("SLC_EDGE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("weird.json") && stderr.contains("unknown evaluation file format"),
        "{stderr}"
    );
}

#[test]
fn limit_keeps_both_positives_and_negatives_for_recognition() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let mut extra = standard_inputs(&data);
    extra.extend(["--limit", "5"].map(String::from));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let config = run_config("http://127.0.0.1:9", out.path(), &extra);
    let (items, _) = collect_items(&config).unwrap();
    let recognition: Vec<_> = items
        .iter()
        .filter(|i| i.task == Task::Recognition)
        .collect();
    let present = recognition
        .iter()
        .filter(|i| i.expected == Expected::Presence { present: true })
        .count();
    assert_eq!((recognition.len(), present), (5, 3));
    for task in [
        Task::VisualMultipleChoice,
        Task::TextMultipleChoice,
        Task::SpecialQuestions,
    ] {
        assert_eq!(
            items.iter().filter(|i| i.task == task).count(),
            5.min(match task {
                Task::SpecialQuestions => 2,
                _ => 5,
            })
        );
    }
}

/// The `full_recheck` ablation is a column of its own next to `full`: the same items asked in
/// mode `full`, with `recheck_mentioned` only in its requests.
#[tokio::test]
async fn the_recheck_ablation_is_a_column_next_to_full() {
    let data = shared_data();
    let out = tempfile::tempdir().unwrap();
    let vqa = data
        .join("eval/slc/yollava_eval/vqa.json")
        .display()
        .to_string();
    let extra = [
        "--input",
        &vqa,
        "--limit",
        "2",
        "--modes",
        "full,full_recheck",
    ];
    let placeholder = run_config("http://127.0.0.1:9", out.path(), &extra);
    let edge = spawn_scripted_edge(scripted_state(&placeholder)).await;
    let config = run_config(&edge.url, out.path(), &extra);
    let outcome = execute(&config).await.unwrap();
    let columns: Vec<EvalMode> = outcome.report.modes.iter().map(|m| m.mode).collect();
    assert_eq!(columns, [EvalMode::Full, EvalMode::FullRecheck]);
    let summary = std::fs::read_to_string(&outcome.written.markdown).unwrap();
    assert!(summary.contains("| full_recheck |"), "{summary}");
    let state = edge.state.lock().unwrap();
    assert_eq!(state.asks.len(), 4);
    for request in &state.asks {
        assert_eq!(request.mode, shared_types::Mode::Full);
    }
    assert_eq!(
        state.asks.iter().filter(|r| r.recheck_mentioned).count(),
        2,
        "only the ablation's requests ask for the second look"
    );
}

//! Wilson intervals against published values, and the paper's figures on hand-made votes.

use slc_eval::items::Task;
use slc_eval::metrics::{Vote, Z_95, equal_weight_mean, proportion, summarize, wilson_interval};

fn close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not within {tolerance} of {expected}"
    );
}

#[test]
fn wilson_matches_known_values() {
    // Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 → 0.2553–0.3662;
    // 15/148 → 0.0624–0.1605; 0/20 → 0–0.1611; 1/29 → 0.0061–0.1718.
    let cases = [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ];
    for (successes, trials, low, high) in cases {
        let (l, h) = wilson_interval(successes, trials, Z_95).unwrap();
        close(l, low, 6e-5);
        close(h, high, 6e-5);
    }
    // All successes: upper bound 1, lower bound n / (n + z²).
    let (l, h) = wilson_interval(10, 10, Z_95).unwrap();
    close(h, 1.0, 1e-12);
    close(l, 10.0 / (10.0 + Z_95 * Z_95), 1e-12);
    assert_eq!(wilson_interval(0, 0, Z_95), None);
}

#[test]
fn weighted_is_the_mean_of_the_recalls_with_an_interval_around_it() {
    let yes = proportion(9, 10).unwrap();
    let no = proportion(3, 10).unwrap();
    let weighted = equal_weight_mean(&yes, &no);
    close(weighted.value, 0.6, 1e-12);
    assert!(weighted.low < 0.6 && weighted.high > 0.6);
    // Narrower than either recall's own interval: it pools twice the trials.
    assert!(weighted.high - weighted.low < yes.high - yes.low);
    assert!(weighted.high - weighted.low < no.high - no.low);
}

fn vote(
    task: Task,
    present: bool,
    correct: bool,
    unparseable: bool,
    errored: bool,
) -> (String, Vote) {
    (
        "set".to_string(),
        Vote {
            task,
            present,
            correct,
            unparseable,
            errored,
        },
    )
}

#[test]
fn recognition_counts_unparseable_and_failed_answers_as_wrong() {
    let votes = vec![
        // 4 positives: 2 right, 1 unparseable, 1 failed request.
        vote(Task::Recognition, true, true, false, false),
        vote(Task::Recognition, true, true, false, false),
        vote(Task::Recognition, true, false, true, false),
        vote(Task::Recognition, true, false, false, true),
        // 2 negatives: 1 right, 1 wrong.
        vote(Task::Recognition, false, true, false, false),
        vote(Task::Recognition, false, false, false, false),
    ];
    let rows = summarize(&votes);
    let get = |name: &str| rows.iter().find(|r| r.metric == name).unwrap();
    close(get("yes_recall").figure.value, 0.5, 1e-12);
    assert_eq!(get("yes_recall").trials, 4);
    assert_eq!(get("yes_recall").unparseable, 1);
    assert_eq!(get("yes_recall").errors, 1);
    close(get("no_recall").figure.value, 0.5, 1e-12);
    close(get("weighted").figure.value, 0.5, 1e-12);
    assert_eq!(get("weighted").unparseable, 1);
    assert_eq!(get("weighted").trials, 6);
}

#[test]
fn accuracy_per_source_and_pooled() {
    let mut votes = Vec::new();
    for i in 0..4 {
        votes.push((
            "single".to_string(),
            vote(Task::VisualMultipleChoice, false, i < 3, false, false).1,
        ));
    }
    for i in 0..2 {
        votes.push((
            "multi".to_string(),
            vote(Task::VisualMultipleChoice, false, i < 1, i == 1, false).1,
        ));
    }
    let rows = summarize(&votes);
    let find = |source: &str| rows.iter().find(|r| r.source == source).unwrap();
    close(find("single").figure.value, 0.75, 1e-12);
    close(find("multi").figure.value, 0.5, 1e-12);
    close(find("all").figure.value, 4.0 / 6.0, 1e-12);
    assert_eq!(find("all").unparseable, 1);
    let (low, high) = wilson_interval(4, 6, Z_95).unwrap();
    close(find("all").figure.low, low, 1e-12);
    close(find("all").figure.high, high, 1e-12);
}

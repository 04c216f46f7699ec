//! The seeded option shuffle: deterministic, a real permutation, and the correct answer
//! follows its option.

use std::collections::BTreeMap;

use slc_eval::items::{EvalItem, Expected};
use slc_eval::options::{shuffle_permutation, split_choices};
use slc_eval::readers::{InputSpec, ReaderOptions, load_input};
use slc_eval::runner::prepare_question;

use crate::shared_data;

#[test]
fn permutation_is_deterministic_per_seed_and_item() {
    for n in 2..6 {
        let a = shuffle_permutation(7, "qa:bo:1", n);
        assert_eq!(a, shuffle_permutation(7, "qa:bo:1", n));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }
    let differs = (0..50).any(|i| {
        shuffle_permutation(7, &format!("qa:bo:{i}"), 4)
            != shuffle_permutation(8, &format!("qa:bo:{i}"), 4)
    });
    assert!(differs, "another seed must change some permutations");
}

fn text_only_items() -> Vec<EvalItem> {
    let spec: InputSpec = shared_data()
        .join("eval/slc/yollava_eval/qa.json")
        .display()
        .to_string()
        .parse()
        .unwrap();
    load_input(&spec, &ReaderOptions::default()).unwrap()
}

#[test]
fn the_correct_option_is_tracked_through_the_permutation() {
    let items = text_only_items();
    let mut letters: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        let Expected::Choice {
            options,
            correct,
            stem,
            ..
        } = &item.expected
        else {
            unreachable!()
        };
        let prepared = prepare_question(item, Some(42));
        let shown = prepared.shown_options.clone().unwrap();
        let correct_shown = prepared.correct_shown.unwrap();
        // The option text the key pointed at is the one now under the expected letter.
        assert_eq!(shown[correct_shown], options[*correct], "{}", item.id);
        assert_eq!(
            prepared.expected_answer,
            ((b'A' + correct_shown as u8) as char).to_string()
        );
        // The question sent lists the shown order, and parses back to it.
        let body = prepared.text.split("\nRULE:").next().unwrap();
        let (parsed_stem, parsed_options) = split_choices(body).unwrap();
        assert_eq!(&parsed_stem, stem);
        assert_eq!(parsed_options, shown);
        *letters.entry(prepared.expected_answer.clone()).or_default() += 1;
        // Same seed, same question.
        assert_eq!(prepare_question(item, Some(42)), prepared);
    }
    // 396/400 keys were A; after shuffling two options, A is the key about half the time.
    let a = letters["A"] as f64 / items.len() as f64;
    assert!((0.4..0.6).contains(&a), "share of A after shuffling: {a}");
}

#[test]
fn unshuffled_questions_are_sent_verbatim() {
    let items = text_only_items();
    let prepared = prepare_question(&items[1], None);
    assert_eq!(prepared.text, items[1].original_question);
    assert_eq!(prepared.permutation, None);
    assert_eq!(prepared.expected_answer, "B");
}

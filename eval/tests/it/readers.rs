//! The readers on the real files in `../shared/data/eval`, and the image-path mapping.

use std::collections::BTreeMap;

use slc_eval::dataset_root::DatasetRoot;
use slc_eval::error::EvalError;
use slc_eval::items::{Expected, Task};
use slc_eval::readers::{InputSpec, ReaderOptions, load_input};

use crate::shared_data;

fn load(relative: &str) -> Vec<slc_eval::items::EvalItem> {
    let spec: InputSpec = shared_data()
        .join(relative)
        .display()
        .to_string()
        .parse()
        .unwrap();
    load_input(&spec, &ReaderOptions::default()).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn answer_letters(items: &[slc_eval::items::EvalItem]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        if let Expected::Choice { correct, .. } = &item.expected {
            *counts.entry(*correct).or_default() += 1;
        }
    }
    counts
}

#[test]
fn slc_authors_yollava_files() {
    let vqa = load("eval/slc/yollava_eval/vqa.json");
    assert_eq!(vqa.len(), 170);
    assert!(
        vqa.iter()
            .all(|i| i.task == Task::VisualMultipleChoice && i.image_reference.is_some())
    );
    let first = &vqa[0];
    // Groups come in key order (serde_json sorts object keys), items in file order.
    assert_eq!(first.id, "vqa:bo:0");
    assert_eq!(first.concepts, vec!["bo"]);
    assert_eq!(
        first.image_reference.as_deref(),
        Some("yollava-data/test/bo/3.png")
    );
    assert_eq!(
        first.original_question,
        "What position is <bo> in? A. Sitting. B. Lying down.\nRULE: Answer this multi-choice question using a single letter."
    );
    match &first.expected {
        Expected::Choice {
            stem,
            options,
            correct,
            instruction,
        } => {
            assert_eq!(stem, "What position is <bo> in?");
            assert_eq!(
                options,
                &vec!["Sitting".to_string(), "Lying down".to_string()]
            );
            assert_eq!(*correct, 1);
            assert_eq!(
                instruction.as_deref(),
                Some("RULE: Answer this multi-choice question using a single letter.")
            );
        }
        other => panic!("expected a choice, got {other:?}"),
    }
    assert_eq!(answer_letters(&vqa), BTreeMap::from([(0, 99), (1, 71)]));

    let qa = load("eval/slc/yollava_eval/qa.json");
    assert_eq!(qa.len(), 400);
    assert!(
        qa.iter()
            .all(|i| i.task == Task::TextMultipleChoice && i.image_reference.is_none())
    );
    // The bias the shuffle exists for: 396 of 400 keys are A.
    assert_eq!(answer_letters(&qa), BTreeMap::from([(0, 396), (1, 4)]));

    let sqa = load("eval/slc/yollava_eval/sqa.json");
    assert_eq!(sqa.len(), 80);
    assert!(sqa.iter().all(|i| i.task == Task::SpecialQuestions));
    assert_eq!(sqa[0].concepts, vec!["bo"]);
}

#[test]
fn slc_authors_mc_llava_files_single_and_multi() {
    let expected = [
        (
            "eval/slc/mc_eval/vqa_single.json",
            865,
            Task::VisualMultipleChoice,
        ),
        (
            "eval/slc/mc_eval/vqa_multi.json",
            472,
            Task::VisualMultipleChoice,
        ),
        (
            "eval/slc/mc_eval/qa_single.json",
            465,
            Task::TextMultipleChoice,
        ),
        (
            "eval/slc/mc_eval/qa_multi.json",
            200,
            Task::TextMultipleChoice,
        ),
    ];
    for (file, count, task) in expected {
        let items = load(file);
        assert_eq!(items.len(), count, "{file}");
        assert!(items.iter().all(|i| i.task == task), "{file}");
    }
    let multi = load("eval/slc/mc_eval/vqa_multi.json");
    let first = multi
        .iter()
        .find(|i| i.id == "vqa_multi:Bafan_Xuezhixia:0")
        .unwrap();
    assert_eq!(first.concepts, vec!["Bafan", "Xuezhixia"]);
    match &first.expected {
        // "A.school hallway. B.park. C.office": no space after the period.
        Expected::Choice { options, .. } => {
            assert_eq!(
                options,
                &vec!["school hallway".to_string(), "park".into(), "office".into()]
            )
        }
        other => panic!("{other:?}"),
    }
    // "?A. A handkerchief;B. A glass of wine;C. A book;" and "A: Red. B: Blue."
    let single = load("eval/slc/mc_eval/vqa_single.json");
    let options_of = |needle: &str| {
        let item = single
            .iter()
            .find(|i| i.original_question.contains(needle))
            .unwrap();
        match &item.expected {
            Expected::Choice { options, .. } => options.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        options_of("holding in her right hand?A."),
        vec!["A handkerchief", "A glass of wine", "A book"]
    );
    assert_eq!(options_of("A: Red. B: Blue."), vec!["Red", "Blue"]);
    assert!(
        load("eval/slc/mc_eval/qa_single.json")
            .iter()
            .any(|i| matches!(&i.expected, Expected::Choice { options, .. } if options.len() == 2))
    );
}

#[test]
fn rap_files_with_options_and_option_keys() {
    let visual = load("eval/rap/yollava-visual-qa.json");
    assert_eq!(visual.len(), 170);
    assert!(visual.iter().all(|i| i.task == Task::VisualMultipleChoice));
    let first = &visual[0];
    assert_eq!(first.concepts, vec!["bo"]);
    assert_eq!(
        first.image_reference.as_deref(),
        Some("./yollava-data/test/bo/0.png")
    );
    assert_eq!(
        first.original_question,
        "What is the primary color of <bo>'s fur? A. Brown. B. Grey.\nRULE: Answer this multi-choice question using a single letter."
    );

    let text = load("eval/rap/yollava-text-only-qa.json");
    assert_eq!(text.len(), 400);
    assert!(
        text.iter()
            .all(|i| i.task == Task::TextMultipleChoice && i.image_reference.is_none())
    );
    assert!(
        text[0]
            .original_question
            .starts_with("Is <bo> a dog or a cat? A. Dog. B. Cat.")
    );
    assert!(!text.iter().any(|i| i.original_question.contains("sks")));
    assert_eq!(answer_letters(&text), BTreeMap::from([(0, 390), (1, 10)]));
}

#[test]
fn recognition_file_generated_from_folders_round_trips() {
    let data = shared_data();
    let file = slc_eval::readers::recognition::from_folders(
        "bo",
        &data.join("yollava/test/bo"),
        &data.join("yollava/negatives"),
        "yollava",
        Some(&data),
    )
    .unwrap();
    assert_eq!(file.items.iter().filter(|i| i.present).count(), 5);
    assert_eq!(file.items.iter().filter(|i| !i.present).count(), 19);
    assert_eq!(file.items[0].image, "yollava/test/bo/0.jpg");
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("rec.json");
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let spec: InputSpec = path.display().to_string().parse().unwrap();
    let mut items = load_input(&spec, &ReaderOptions::default()).unwrap();
    assert_eq!(items.len(), 24);
    assert_eq!(
        items[0].original_question,
        "Is <bo> in this image? Answer with a single word or phrase."
    );
    assert_eq!(items[0].expected, Expected::Presence { present: true });
    assert_eq!(items[23].expected, Expected::Presence { present: false });
    DatasetRoot::new(&data, vec![])
        .resolve_items(&mut items)
        .unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.image_path.as_ref().unwrap().is_file())
    );
}

#[test]
fn dataset_root_maps_authors_paths_to_the_sample_files() {
    let data = shared_data();
    let root = DatasetRoot::new(&data, vec![("yollava-data".into(), "yollava".into())]);
    for reference in [
        "yollava-data/test/bo/3.png",
        "./yollava-data/test/bo/3.png",
        "benchmark_data/yollava-data/test/bo/3.png",
    ] {
        assert_eq!(
            root.resolve("x", reference).unwrap(),
            data.join("yollava/test/bo/3.jpg"),
            "{reference}"
        );
    }
    let error = root
        .resolve("vqa:shiba-gray:0", "yollava-data/test/shiba-gray/3.png")
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, EvalError::MissingImage { .. }));
    assert!(
        message.contains("vqa:shiba-gray:0") && message.contains("yollava/test/shiba-gray/3.jpg"),
        "{message}"
    );
}

#[test]
fn unknown_formats_and_bad_items_are_named() {
    let folder = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let path = folder.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string().parse::<InputSpec>().unwrap()
    };
    let options = ReaderOptions::default();
    let message = load_input(&write("odd.json", "[1, 2]"), &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("odd.json") && message.contains("unknown evaluation file format"),
        "{message}"
    );
    let message = load_input(&write("nums.json", r#"{"bo": 3}"#), &options)
        .unwrap_err()
        .to_string();
    assert!(message.contains("nums.json"), "{message}");
    let bad_key =
        r#"{"bo": [{"conversations": [{"from": "human", "value": "Q? A. x. B. y."}], "gt": "C"}]}"#;
    let message = load_input(&write("qa.json", bad_key), &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("item qa:bo:0") && message.contains("\"C\""),
        "{message}"
    );
    let no_options =
        r#"{"bo": [{"conversations": [{"from": "human", "value": "What is it?"}], "gt": "A"}]}"#;
    let message = load_input(&write("qa2.json", no_options), &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("item qa2:bo:0") && message.contains("cannot find options"),
        "{message}"
    );
    let message = load_input(
        &write(
            "rec.json",
            r#"{"format": "slc-eval-recognition/9", "items": []}"#,
        ),
        &options,
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("slc-eval-recognition/9"), "{message}");
    let missing = "/nonexistent/file.json".parse::<InputSpec>().unwrap();
    assert!(
        load_input(&missing, &options)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/file.json")
    );
}

#[test]
fn input_spec_kind_prefix_overrides_the_file_name() {
    let spec: InputSpec = "sqa:/tmp/x.json".parse().unwrap();
    assert_eq!(spec.task, Some(Task::SpecialQuestions));
    assert_eq!(spec.path, std::path::PathBuf::from("/tmp/x.json"));
    let spec: InputSpec = "/tmp/vqa.json".parse().unwrap();
    assert_eq!(spec.task, None);
}

#[test]
fn authors_recognition_items_use_is_positive() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("rec_multi.json");
    let body = r#"{"A_B": [
        {"conversations": [{"from": "system", "value": "<A> is x. <B> is y."},
                           {"from": "human", "value": "<image>\nIs <B> in this image?"}],
         "images": ["mc/A_B/0.png"], "is_positive": true},
        {"conversations": [{"from": "human", "value": "<image>\nIs <A> in this image?"}],
         "images": ["mc/A_B/1.png"], "is_positive": false}]}"#;
    std::fs::write(&path, body).unwrap();
    let spec: InputSpec = path.display().to_string().parse().unwrap();
    let items = load_input(&spec, &ReaderOptions::default()).unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|i| i.task == Task::Recognition && i.source == "rec_multi")
    );
    assert_eq!(items[0].concepts, vec!["B"]);
    assert_eq!(items[0].original_question, "Is <B> in this image?");
    assert_eq!(items[0].expected, Expected::Presence { present: true });
    assert_eq!(items[1].expected, Expected::Presence { present: false });
}

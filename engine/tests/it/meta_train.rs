//! Meta-training end to end on the tiny Qwen2.5-VL checkpoint with real photos from
//! `../shared/data/concepts`: the loss on the cluster's assistant tokens falls, the bank it writes
//! loads in the engine (and, via `tests/fixtures/lora/peft_logits.py`, in HF PEFT), a rerun resumes
//! from the checkpoint to exactly the adapter an uninterrupted run makes, and bad datasets and
//! a too-large K are clear errors.

use crate::qwen25vl_parity::{fixture_dir, load};
use slc_engine::EngineError;
use slc_engine::lora::{AdapterBank, LoraAdapter, attach_adapter, detach_adapters};
use slc_engine::meta_train::dataset::read_concept_datasets;
use slc_engine::meta_train::embed::{ClipImageEmbedder, ImageEmbedder, embed_report};
use slc_engine::meta_train::examples::ExampleBuilder;
use slc_engine::meta_train::trainer::example_loss;
use slc_engine::meta_train::{MetaTrainConfig, meta_train};
use slc_engine::preprocess::{PixelBudget, Qwen2VlImageProcessor};
use slc_engine::qwen2_5_vl::rope::MultimodalRotary;
use slc_engine::qwen2_5_vl::{LoadOptions, Qwen25VlModel};
use slc_engine::tokenizer::QwenTokenizer;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// `../shared/data/concepts` seen from the repository root, or from the nearest ancestor that
/// has `shared/data` (a worktree sits one level deeper than the main checkout);
/// `SLC_SHARED_DATA` overrides.
fn shared_concepts() -> PathBuf {
    let data = std::env::var_os("SLC_SHARED_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .skip(1)
                .map(|a| a.join("shared/data"))
                .find(|d| d.is_dir())
        });
    let dir = data.map(|d| d.join("concepts")).unwrap_or_default();
    assert!(
        dir.join("database.json").is_file(),
        "the sample data is missing: expected ../shared/data/concepts/database.json next to the checkout \
         (or set SLC_SHARED_DATA; see /work/shared/data/README.md)"
    );
    dir
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "slc-meta-train-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A dataset of `names` from the shared concept database: each concept's photo, its description
/// and three conversations (two about the photo, one text-only).
fn make_dataset(names: &[&str]) -> PathBuf {
    let source = shared_concepts();
    let database: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("database.json")).unwrap())
            .unwrap();
    let root = temp_dir("dataset");
    for name in names {
        let concept = &database["concept_dict"][format!("<{name}>")];
        let folder = root.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(
            source.join(concept["image"].as_str().unwrap()),
            folder.join("0.jpg"),
        )
        .unwrap();
        let info = concept["info"].as_str().unwrap();
        let category = concept["category"].as_str().unwrap();
        std::fs::write(folder.join("description.txt"), info).unwrap();
        let system = format!("You are a helpful assistant. {info}");
        let conversations = serde_json::json!([
            {"conversations": [
                {"from": "system", "value": system},
                {"from": "human", "value": format!("<image>\nIs <{name}> in this photo?")},
                {"from": "assistant", "value": format!("Yes, <{name}> is in this photo.")}],
             "images": ["0.jpg"]},
            {"conversations": [
                {"from": "human", "value": format!("<image>\nWhat kind of thing is <{name}>?")},
                {"from": "gpt", "value": format!("<{name}> is a {category}.")}],
             "images": ["0.jpg"]},
            {"conversations": [
                {"from": "system", "value": system},
                {"from": "human", "value": format!("Describe <{name}>.")},
                {"from": "assistant", "value": info}],
             "images": []}
        ]);
        std::fs::write(folder.join("conversations.json"), conversations.to_string()).unwrap();
    }
    root
}

/// The tiny random-weight CLIP of `tests/fixtures/clip` (the one its parity test checks).
fn tiny_clip() -> ClipImageEmbedder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tiny-clip");
    ClipImageEmbedder::load(&dir, tch::Device::Cpu).unwrap()
}

fn test_config(dataset: &Path, output: &Path, steps: usize) -> MetaTrainConfig {
    let mut config = MetaTrainConfig::new(
        dataset.to_path_buf(),
        fixture_dir("untied"),
        output.to_path_buf(),
    );
    config.meta_concepts = 2;
    config.recipe.steps = steps;
    config.recipe.batch_size = 3;
    // The paper's 5e-5 moves a random tiny model too little in a few steps to measure.
    config.recipe.learning_rate = 1e-2;
    config.recipe.checkpoint_every = 2;
    config.recipe.seed = 7;
    config.show_progress = false;
    config
}

/// Mean assistant-token loss over every conversation of `concepts`, with `adapter` (or none).
fn dataset_loss(
    model: &mut Qwen25VlModel,
    dataset: &Path,
    concepts: &[String],
    adapter: Option<&LoraAdapter>,
) -> f64 {
    let _guard = tch::no_grad_guard();
    match adapter {
        Some(a) => attach_adapter(model, a),
        None => detach_adapters(model),
    }
    let tokenizer = QwenTokenizer::from_model_dir(&fixture_dir("untied")).unwrap();
    let processor = Qwen2VlImageProcessor::from_model_dir(&fixture_dir("untied")).unwrap();
    let builder = ExampleBuilder {
        tokenizer: &tokenizer,
        processor: &processor,
        budget: PixelBudget::default(),
        merge_size: 2,
    };
    let t = &model.config.text;
    let rotary = MultimodalRotary::new(
        t.head_dim(),
        t.rope_theta,
        t.mrope_section.clone(),
        model.device(),
    );
    let mut losses = Vec::new();
    for concept in read_concept_datasets(dataset).unwrap() {
        if !concepts.contains(&concept.name) {
            continue;
        }
        for conversation in &concept.conversations {
            let example = builder.build(&concept, conversation).unwrap();
            let embeds = (!example.grids.is_empty()).then(|| {
                let pixels =
                    Tensor::from_slice(&example.pixel_values).view([-1, example.patch_dim as i64]);
                model.encode_images(&pixels, &example.grids).unwrap()
            });
            losses.push(
                example_loss(model, &rotary, &example, embeds.as_ref())
                    .unwrap()
                    .double_value(&[]),
            );
        }
    }
    losses.iter().sum::<f64>() / losses.len() as f64
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn meta_train_makes_a_bank_whose_adapters_lower_the_loss_and_resume_exactly() {
    let dataset = make_dataset(&["bo", "butin", "brown-duck"]);
    let embedder = tiny_clip();
    let output = temp_dir("bank");
    let steps = 6;
    let clock = std::time::Instant::now();
    let report = meta_train(&test_config(&dataset, &output, steps), &embedder).unwrap();
    let seconds = clock.elapsed().as_secs_f64();
    assert_eq!(report.adapters.len(), 2);
    let total_steps: usize = report.adapters.iter().map(|a| a.steps_run).sum();
    for adapter in &report.adapters {
        assert_eq!(adapter.losses.len(), steps);
        println!(
            "meta-train {}: members {:?}, {} examples, loss {:.4} -> {:.4}, {:.2} steps/s (batch 3)",
            adapter.meta_concept,
            adapter.members,
            adapter.examples,
            adapter.losses[0],
            adapter.losses[steps - 1],
            adapter.steps_run as f64 / adapter.seconds
        );
    }
    println!(
        "meta-train total: {total_steps} steps in {seconds:.1} s including loading and embedding"
    );

    // The bank loads in the engine, and each adapter lowers its cluster's loss.
    let mut model = load("untied");
    let bank = AdapterBank::load(&output, &mut model, &embedder.clip_model()).unwrap();
    assert_eq!(bank.meta_concepts.len(), 2);
    for (meta, trained) in bank.meta_concepts.iter().zip(&report.adapters) {
        assert_eq!(meta.name, trained.meta_concept);
        let before = dataset_loss(&mut model, &dataset, &trained.members, None);
        let after = dataset_loss(&mut model, &dataset, &trained.members, Some(&meta.adapter));
        println!(
            "{}: cluster loss {before:.4} without the adapter, {after:.4} with it",
            meta.name
        );
        assert!(
            after < before - 0.05,
            "{}: loss {before} -> {after} did not fall",
            meta.name
        );
    }

    // Selection by Eq. 1 picks a concept's own meta-concept adapter.
    let meta_index = 0;
    let own = bank.meta_concepts[meta_index].embedding.clone();
    let selection = bank.select(&[own], 1).unwrap();
    assert_eq!(selection.choices[0].index, meta_index);
    assert!((selection.choices[0].similarity - 1.0).abs() < 1e-5);

    // A rerun reuses finished adapters and changes nothing.
    let weights = |dir: &Path, name: &str| {
        file_bytes(
            &dir.join("adapters")
                .join(name)
                .join("adapter_model.safetensors"),
        )
    };
    let first_name = report.adapters[0].meta_concept.clone();
    let original = weights(&output, &first_name);
    let again = meta_train(&test_config(&dataset, &output, steps), &embedder).unwrap();
    assert!(again.adapters.iter().all(|a| a.reused && a.steps_run == 0));
    assert_eq!(weights(&output, &first_name), original);

    // Interrupted after 4 steps, then continued to 6: the same adapter as the uninterrupted run.
    let resumed = temp_dir("resumed");
    meta_train(&test_config(&dataset, &resumed, 4), &embedder).unwrap();
    for adapter in &report.adapters {
        std::fs::remove_dir_all(resumed.join("adapters").join(&adapter.meta_concept)).unwrap();
    }
    let continued = meta_train(&test_config(&dataset, &resumed, steps), &embedder).unwrap();
    assert!(
        continued
            .adapters
            .iter()
            .all(|a| a.steps_run == 2 && a.losses.len() == steps)
    );
    for adapter in &report.adapters {
        assert_eq!(
            weights(&resumed, &adapter.meta_concept),
            weights(&output, &adapter.meta_concept),
            "{}: resumed run differs from the uninterrupted one",
            adapter.meta_concept
        );
    }

    // The produced adapters load in HF PEFT too, with logits equal to ours.
    crate::lora_parity::assert_peft_agrees(&output.join("adapters").join(&first_name));

    for dir in [dataset, output, resumed] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Meta-training on an int8 base (`--quant int8`): gradients flow through the quantized
/// layers' differentiable path to the f32 factors, and each adapter lowers its cluster's loss
/// on the quantized model it was trained on.
#[test]
fn meta_train_on_a_quantized_base_lowers_the_loss() {
    let dataset = make_dataset(&["bo", "butin", "brown-duck"]);
    let embedder = tiny_clip();
    let output = temp_dir("bank-int8");
    let mut config = test_config(&dataset, &output, 6);
    config.quant = Some("int8".into());
    let report = meta_train(&config, &embedder).unwrap();
    let options = LoadOptions::parse("cpu", None, Some("int8")).unwrap();
    let mut model = Qwen25VlModel::load(&fixture_dir("untied"), options).unwrap();
    let bank = AdapterBank::load(&output, &mut model, &embedder.clip_model()).unwrap();
    for (meta, trained) in bank.meta_concepts.iter().zip(&report.adapters) {
        assert!(
            trained.losses.iter().all(|l| l.is_finite()),
            "{:?}",
            trained.losses
        );
        let before = dataset_loss(&mut model, &dataset, &trained.members, None);
        let after = dataset_loss(&mut model, &dataset, &trained.members, Some(&meta.adapter));
        assert!(
            after < before - 0.05,
            "{}: loss {before} -> {after}",
            meta.name
        );
    }
    for dir in [dataset, output] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn expect_invalid(
    result: slc_engine::Result<slc_engine::meta_train::MetaTrainReport>,
    needle: &str,
) {
    match result {
        Err(EngineError::InvalidInput(message)) => assert!(message.contains(needle), "{message}"),
        Err(other) => panic!("expected invalid input about {needle}, got {other}"),
        Ok(_) => panic!("expected an error about {needle}"),
    }
}

#[test]
fn bad_datasets_and_too_many_meta_concepts_are_clear_errors() {
    let embedder = tiny_clip();
    let output = temp_dir("bad-output");

    let dataset = make_dataset(&["bo", "butin"]);
    let mut config = test_config(&dataset, &output, 1);
    config.meta_concepts = 3;
    expect_invalid(meta_train(&config, &embedder), "only 2 concepts");

    std::fs::remove_file(dataset.join("bo/0.jpg")).unwrap();
    expect_invalid(
        meta_train(&test_config(&dataset, &output, 1), &embedder),
        "no reference images",
    );

    let dataset = make_dataset(&["bo", "butin"]);
    std::fs::remove_file(dataset.join("butin/description.txt")).unwrap();
    expect_invalid(
        meta_train(&test_config(&dataset, &output, 1), &embedder),
        "has no description.txt",
    );

    std::fs::remove_dir_all(output).ok();
}

#[test]
fn embed_report_has_unit_self_similarity_and_symmetric_cosines() {
    let embedder = tiny_clip();
    let source = shared_concepts();
    let images = vec![
        source.join("bo.jpg"),
        source.join("butin.jpg"),
        source.join("brown-duck.jpg"),
    ];
    let report = embed_report(&embedder, &images).unwrap();
    assert_eq!(report.images.len(), 3);
    for i in 0..3 {
        assert!((report.cosines[i][i] - 1.0).abs() < 1e-5);
        for j in 0..3 {
            assert!((report.cosines[i][j] - report.cosines[j][i]).abs() < 1e-6);
        }
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["images"][0]["embedding"].as_array().unwrap().len(), 16);
    assert_eq!(json["clip_model"]["name"], "tiny-clip");
}

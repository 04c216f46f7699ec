//! llguidance on the real vocabulary, and the `tokenize` command.

use std::process::Command;

use slc_detector::cli::grammar_walk::{sample_cue_set, sample_ids, walk_answer};
use slc_detector::detection::{LOCATION_MAX_CHARS, cue_set_schema};
use slc_engine::chat::{ChatMessage, ChatTemplateOptions, ContentPart, encode_chat};
use slc_engine::constrain::{ConstraintVocabulary, Grammar};

use super::{real_tokenizer, real_tokenizer_dir};

/// Qwen2.5-VL-3B's logit rows (151,936 > the tokenizer's 151,665).
const MODEL_VOCAB: usize = 151_936;

/// A model writing a valid cue set token by token (its own, canonical tokenization): every
/// run jump-forward forces must be exactly the tokens the model would have written there,
/// or forcing changes the ids the model conditions on.
#[test]
fn forced_runs_are_the_models_own_tokens_on_the_real_vocabulary() {
    let tokenizer = real_tokenizer();
    let vocabulary = ConstraintVocabulary::new(&tokenizer, MODEL_VOCAB).unwrap();
    for (count, chars) in [(1, LOCATION_MAX_CHARS), (4, 24), (16, 12)] {
        let schema = cue_set_schema(&sample_ids(count), chars);
        let answer = sample_cue_set(&schema, chars);
        let walk = walk_answer(
            &tokenizer,
            &vocabulary,
            &Grammar::JsonSchema(schema),
            &answer,
        )
        .unwrap();
        let diverged: Vec<String> = walk
            .forced_runs
            .iter()
            .filter(|run| !run.matches())
            .map(|run| {
                format!(
                    "at {}: forced {:?} {:?}, the model writes {:?} {:?}",
                    run.at,
                    run.forced,
                    tokenizer.decode(&run.forced, false).unwrap(),
                    run.canonical,
                    tokenizer.decode(&run.canonical, false).unwrap()
                )
            })
            .collect();
        assert!(
            diverged.is_empty(),
            "{count} concepts:\n{}",
            diverged.join("\n")
        );
        assert!(
            walk.forced_tokens > walk.sampled_tokens / 2,
            "{count} concepts: keys and punctuation are forced ({} forced, {} sampled)",
            walk.forced_tokens,
            walk.sampled_tokens
        );
    }
}

fn tokenize(args: &[&str]) -> Vec<u32> {
    let output = Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("tokenize")
        .arg("--model")
        .arg(real_tokenizer_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_tokenize_command_prints_the_ids_as_json() {
    let tokenizer = real_tokenizer();
    let text = "Is <bo> in this photo? <|im_end|> 你好";
    assert_eq!(tokenize(&[text]), tokenizer.encode(text).unwrap());
    assert_eq!(tokenize(&["Hello"]), vec![9707]);
    let as_user_text = tokenize(&["--user-text", text]);
    assert_eq!(as_user_text, tokenizer.encode_plain(text).unwrap());
    assert!(!as_user_text.contains(&tokenizer.special_tokens().im_end));
    let chat = tokenize(&["--chat", "--image-tokens", "4", text]);
    let messages = [ChatMessage::user(vec![
        ContentPart::Image,
        ContentPart::Text(text.into()),
    ])];
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        add_vision_id: false,
    };
    assert_eq!(
        chat,
        encode_chat(&tokenizer, &messages, options, &[4]).unwrap()
    );
}

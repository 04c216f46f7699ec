//! Constrained decoding on the tiny Qwen tokenizer: random walks that pick any token the
//! mask allows must always end in text the grammar accepts (checked independently here),
//! forced runs are reported and counted, and bad grammars or tokens are typed errors.

use serde_json::{Value, json};
use slc_engine::constrain::{Constraint, ConstraintError, ConstraintVocabulary, Grammar};
use slc_engine::tokenizer::QwenTokenizer;

use crate::preprocess_parity::fixtures_dir;

fn tokenizer() -> QwenTokenizer {
    QwenTokenizer::from_model_dir(&fixtures_dir().join("tokenizer")).unwrap()
}

/// A model vocabulary larger than the tokenizer, as real checkpoints have (151936 > 151665).
const MODEL_VOCAB: usize = 704;

fn vocabulary(tokenizer: &QwenTokenizer) -> ConstraintVocabulary {
    ConstraintVocabulary::new(tokenizer, MODEL_VOCAB).unwrap()
}

/// xorshift64*: deterministic choices without a dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

#[derive(Debug, Default)]
struct Walk {
    text: String,
    /// Forward passes: one per sampled token (a forced run rides along with the next one).
    decode_steps: usize,
    emitted: usize,
    first_forced_run: Option<String>,
}

/// Feeds forced runs whole and picks uniformly among allowed tokens otherwise, until the
/// grammar is complete and `<|im_end|>` is chosen (or the step budget runs out).
fn random_walk(
    tokenizer: &QwenTokenizer,
    vocabulary: &ConstraintVocabulary,
    grammar: &Grammar,
    seed: u64,
) -> Walk {
    let mut constraint = Constraint::new(vocabulary, grammar).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut ids = Vec::new();
    let mut walk = Walk::default();
    for _ in 0..2000 {
        let forced = constraint.forced_tokens();
        if !forced.is_empty() {
            if walk.first_forced_run.is_none() {
                walk.first_forced_run = Some(tokenizer.decode(&forced, false).unwrap());
            }
            constraint.commit_forced(&forced).unwrap();
            ids.extend_from_slice(&forced);
            continue;
        }
        let mask = constraint.allowed_tokens().unwrap();
        let allowed = mask.allowed_ids();
        assert!(
            !allowed.is_empty(),
            "dead end after {:?}",
            tokenizer.decode(&ids, false)
        );
        assert!(
            allowed
                .iter()
                .all(|&t| (t as usize) < tokenizer.vocab_size()),
            "ids past the tokenizer (padding rows) must never be allowed"
        );
        let token = allowed[rng.below(allowed.len())];
        walk.decode_steps += 1;
        if token == vocabulary.end_of_turn() {
            assert!(constraint.is_accepting());
            constraint.commit(&[token]).unwrap();
            walk.text = tokenizer.decode(&ids, false).unwrap();
            walk.emitted = constraint.stats().emitted_tokens() - 1;
            assert_eq!(walk.emitted, ids.len());
            return walk;
        }
        constraint.commit(&[token]).unwrap();
        ids.push(token);
    }
    panic!("walk did not finish: {:?}", tokenizer.decode(&ids, false));
}

/// The cue-set schema of the detection prompt (paper Table 6) for the given concepts:
/// every concept present, and `present: false` omits the location keys.
fn cue_set_schema(concepts: &[&str]) -> Value {
    let visible = json!({
        "type": "object",
        "properties": {
            "present": {"const": true},
            "location-absolute": {"type": "string", "maxLength": 12},
            "location-relative": {"type": "string", "maxLength": 12}
        },
        "required": ["present", "location-absolute", "location-relative"],
        "additionalProperties": false
    });
    let absent = json!({
        "type": "object",
        "properties": {"present": {"const": false}},
        "required": ["present"],
        "additionalProperties": false
    });
    let properties: serde_json::Map<String, Value> = concepts
        .iter()
        .map(|c| (c.to_string(), json!({"anyOf": [visible, absent]})))
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": concepts,
        "additionalProperties": false
    })
}

/// An independent check of a cue set against `cue_set_schema(concepts)`.
fn assert_valid_cue_set(text: &str, concepts: &[&str]) {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let object = value.as_object().unwrap();
    let keys: Vec<&str> = object.keys().map(|k| k.as_str()).collect();
    let mut expected: Vec<&str> = concepts.to_vec();
    expected.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "{text}");
    for concept in concepts {
        let cue = object[*concept].as_object().unwrap();
        match cue["present"].as_bool() {
            Some(true) => {
                assert_eq!(cue.len(), 3, "{text}");
                for key in ["location-absolute", "location-relative"] {
                    let s = cue[key].as_str().unwrap_or_else(|| panic!("{text}"));
                    assert!(s.chars().count() <= 12, "{text}");
                }
            }
            Some(false) => assert_eq!(cue.len(), 1, "{text}"),
            None => panic!("present is not a boolean: {text}"),
        }
    }
}

#[test]
fn cue_set_random_walks_always_validate_and_most_tokens_are_forced() {
    let tokenizer = tokenizer();
    let vocabulary = vocabulary(&tokenizer);
    let concepts = ["<bo>", "<mam>"];
    let grammar = Grammar::JsonSchema(cue_set_schema(&concepts));
    let (mut steps, mut emitted) = (0, 0);
    let mut saw = (false, false);
    for seed in 0..24 {
        let walk = random_walk(&tokenizer, &vocabulary, &grammar, seed);
        assert_valid_cue_set(&walk.text, &concepts);
        assert_eq!(
            walk.first_forced_run.as_deref(),
            Some("{\"<bo>\": {\"present\":"),
            "the keys up to the first free value are forced (the space after the colon stays \
             free: it may merge with the value's first token)"
        );
        saw.0 |= walk.text.contains("true");
        saw.1 |= walk.text.contains("false");
        steps += walk.decode_steps;
        emitted += walk.emitted;
    }
    assert!(saw.0 && saw.1, "both branches of the schema were explored");
    // Jump-forward: fewer forward passes than tokens emitted.
    assert!(steps < emitted, "steps {steps} vs emitted {emitted}");
}

#[test]
fn choice_yields_exactly_one_option() {
    let tokenizer = tokenizer();
    let vocabulary = vocabulary(&tokenizer);
    let grammar = Grammar::Choice(vec!["yes".into(), "no".into()]);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..16 {
        let walk = random_walk(&tokenizer, &vocabulary, &grammar, seed);
        assert!(walk.text == "yes" || walk.text == "no", "{:?}", walk.text);
        seen.insert(walk.text);
    }
    assert_eq!(seen.len(), 2);

    // After "yes" the only allowed token is the end of turn.
    let mut constraint = Constraint::choice(&vocabulary, &["yes", "no"]).unwrap();
    let yes = tokenizer.encode("yes").unwrap();
    constraint.commit(&yes).unwrap();
    assert!(constraint.is_finished());
    let mask = constraint.allowed_tokens().unwrap();
    assert_eq!(mask.allowed_ids(), [vocabulary.end_of_turn()]);
    let mut logits = vec![0.5f32; MODEL_VOCAB];
    mask.apply_to_logits(&mut logits);
    assert_eq!(logits.iter().filter(|l| l.is_finite()).count(), 1);
}

#[test]
fn regex_walks_match_the_pattern() {
    let tokenizer = tokenizer();
    let vocabulary = vocabulary(&tokenizer);
    let grammar = Grammar::Regex("(top|bottom)-(left|right) [0-9]{2}".into());
    for seed in 0..16 {
        let text = random_walk(&tokenizer, &vocabulary, &grammar, seed).text;
        let (corner, number) = text.split_once(' ').unwrap();
        assert!(
            ["top-left", "top-right", "bottom-left", "bottom-right"].contains(&corner),
            "{text}"
        );
        assert!(
            number.len() == 2 && number.bytes().all(|b| b.is_ascii_digit()),
            "{text}"
        );
    }
}

#[test]
fn disallowed_tokens_and_bad_grammars_are_typed_errors() {
    let tokenizer = tokenizer();
    let vocabulary = vocabulary(&tokenizer);
    let mut constraint = Constraint::choice(&vocabulary, &["yes", "no"]).unwrap();
    let brace = tokenizer.encode("{").unwrap();
    assert!(matches!(
        constraint.commit(&brace),
        Err(ConstraintError::TokenRejected { .. })
    ));

    let bad_schema = json!({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}});
    assert!(matches!(
        Constraint::json_schema(&vocabulary, &bad_schema),
        Err(ConstraintError::InvalidGrammar(_))
    ));
    assert!(matches!(
        Constraint::regex(&vocabulary, "(unclosed"),
        Err(ConstraintError::InvalidGrammar(_))
    ));
    assert!(matches!(
        Constraint::new(&vocabulary, &Grammar::Choice(vec![])),
        Err(ConstraintError::InvalidGrammar(_))
    ));
    assert!(matches!(
        Constraint::json_schema(&vocabulary, &json!("not an object")),
        Err(ConstraintError::InvalidGrammar(_))
    ));
}

#[test]
fn choice_options_are_literal_even_with_regex_metacharacters() {
    let tokenizer = tokenizer();
    let vocabulary = vocabulary(&tokenizer);
    let grammar = Grammar::Choice(vec!["a.b".into(), "(x|y)*".into()]);
    for seed in 0..8 {
        let text = random_walk(&tokenizer, &vocabulary, &grammar, seed).text;
        assert!(text == "a.b" || text == "(x|y)*", "{text}");
    }
}

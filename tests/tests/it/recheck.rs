//! `recheck_mentioned` end to end: the tiny model's detection on the edge, the real reasoner,
//! and a scripted large model that says "yes": every concept the question names that the
//! small model reported absent comes back `recovered`, asked per concept or in the batch.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use slc_e2e::scripted_llm::ScriptedLlm;
use slc_e2e::{Stack, StackOptions, fixtures, sample_concepts};

const CONCEPTS: [&str; 3] = ["bo", "brown-duck", "dug"];

async fn start(llm: &ScriptedLlm) -> Stack {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_slc-demo")).parent().unwrap();
    let mut options = StackOptions::new(bin_dir.to_path_buf());
    options.llm_url = Some(llm.url.clone());
    let stack = Stack::start(options).await.expect("starting the stack");
    let samples = sample_concepts().unwrap();
    for id in CONCEPTS {
        let sample = samples.iter().find(|s| s.id == id).unwrap();
        stack
            .register(
                &sample.id,
                &sample.description,
                std::slice::from_ref(&sample.image),
            )
            .await
            .unwrap();
    }
    stack
}

async fn ask(stack: &Stack, batched: bool) -> Value {
    use base64::Engine as _;
    let image = std::fs::read(fixtures().join("query/bo-on-the-sofa.jpg")).unwrap();
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&json!({
            "image": base64::engine::general_purpose::STANDARD.encode(image),
            "question": "Are <bo>, <brown-duck> and <dug> in this photo?",
            "concepts": CONCEPTS,
            "mode": "full",
            "batched_verification": batched,
            "recheck_mentioned": true
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn mentioned_misses_are_recovered_in_batched_and_per_concept_verification() {
    let llm = ScriptedLlm::start(&["unused"], Duration::ZERO)
        .await
        .unwrap();
    let stack = start(&llm).await;
    for batched in [false, true] {
        let before = llm.log().requests.len();
        let body = ask(&stack, batched).await;
        let raw = &body["raw_cues"];
        let missed: Vec<String> = CONCEPTS
            .iter()
            .map(|id| format!("<{id}>"))
            .filter(|id| raw[id]["present"] == false)
            .collect();
        assert!(
            !missed.is_empty(),
            "the tiny model reported every concept present ({raw}); the test needs a miss"
        );
        for id in &missed {
            assert_eq!(body["reasoning"]["actions"][id], "recovered", "{body}");
            assert_eq!(
                body["reasoning"]["refined_cues"][id],
                json!({"present": true})
            );
        }
        let verify: Vec<String> = llm.log().requests[before..]
            .iter()
            .filter(|r| {
                r["messages"][0]["content"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("You are a visual verifier")
            })
            .map(|r| {
                r["messages"][1]["content"][1]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let presence = |text: &String| text.matches("in the image? (yes or no)").count();
        let asked: usize = verify.iter().map(presence).sum();
        assert_eq!(asked, missed.len(), "{verify:?}");
        if batched {
            assert_eq!(verify.len(), 1, "{verify:?}");
        } else {
            // Each presence question is a call of its own.
            assert!(
                verify
                    .iter()
                    .filter(|text| presence(text) > 0)
                    .all(|text| text.lines().count() == 1),
                "{verify:?}"
            );
        }
    }
    stack.stop().unwrap();
}

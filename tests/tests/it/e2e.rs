//! Both real binaries on loopback, the reasoner using the edge's own OpenAI endpoint as its large
//! model (tiny checkpoint), with recording proxies on both wires: every mode with and without an
//! image, the whole trace, pseudonymization, streaming, and proof that no reference-image bytes
//! or embeddings cross to the cloud.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use slc_e2e::{EDGE_TO_REASONER_KEY, Recorded, Stack, StackOptions, fixtures, sample_concepts};

const CONCEPTS: [&str; 3] = ["bo", "brown-duck", "dug"];

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_slc-demo"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn start(record: bool) -> Stack {
    let stack = start_empty(record).await;
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

async fn start_empty(record: bool) -> Stack {
    let mut options = StackOptions::new(bin_dir());
    options.record = record;
    // The services' logs, for when a test fails.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("e2e").replace("::", "-");
    options.log_dir = Some(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e-logs")
            .join(test),
    );
    Stack::start(options).await.expect("starting the stack")
}

fn base64_file(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

fn query_image() -> String {
    format!(
        "data:image/jpeg;base64,{}",
        base64_file(&fixtures().join("query/bo-on-the-sofa.jpg"))
    )
}

/// A stretch from the middle of a base64 text: present in any body that carries those bytes
/// as base64 (each image is encoded on its own, so the alignment is the same).
fn fingerprint(base64: &str) -> &str {
    let middle = base64.len() / 2;
    &base64[middle..middle + 96]
}

async fn ask(stack: &Stack, request: Value, request_id: &str) -> Value {
    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .header("x-request-id", request_id)
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{request}: {body}");
    body
}

fn recorded(recording: &slc_e2e::Recording) -> Vec<Recorded> {
    recording.lock().unwrap().clone()
}

fn object_keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_mode_with_and_without_an_image_through_both_binaries() {
    let stack = start(true).await;
    let image = query_image();
    let asked: BTreeSet<String> = ["<bo>", "<brown-duck>"].map(String::from).into();
    for (turn, mode) in ["full", "no_reflection", "no_detector", "pure"]
        .into_iter()
        .enumerate()
    {
        for visual in [true, false] {
            let before_llm = recorded(&stack.to_large_model).len();
            let before_reasoner = recorded(&stack.to_reasoner).len();
            let mut request = json!({
                "question": "What is <bo> doing?",
                "concepts": ["bo", "brown-duck"],
                "mode": mode,
            });
            if visual {
                request["image"] = json!(image);
            }
            let request_id = format!("e2e-{turn}-{visual}");
            let body = ask(&stack, request, &request_id).await;
            let context = format!("{mode}, visual {visual}: {body}");
            let reasoning = &body["reasoning"];
            assert_eq!(body["mode"], mode, "{context}");
            assert_eq!(reasoning["mode"], mode, "{context}");
            assert!(body["answer"].is_string(), "{context}");
            assert_eq!(body["answer"], reasoning["answer"], "{context}");

            // Detection runs on the edge only with an image, in the modes that use it.
            let detects = visual && (mode == "full" || mode == "no_reflection");
            let detection = &body["detection"];
            if detects {
                assert_eq!(object_keys(&detection["cues"]), asked, "{context}");
                assert_eq!(body["raw_cues"], detection["cues"], "{context}");
                assert!(detection["adapter"]["name"].is_string(), "{context}");
            } else {
                assert!(detection.is_null(), "{context}");
            }

            // Exactly one /v1/reason per turn, carrying only what DESIGN.md allows.
            let to_reasoner = recorded(&stack.to_reasoner);
            assert_eq!(to_reasoner.len(), before_reasoner + 1, "{context}");
            let sent = &to_reasoner[before_reasoner];
            assert_eq!(sent.path, "/v1/reason");
            assert_eq!(sent.header("x-request-id"), Some(request_id.as_str()));
            assert_eq!(
                sent.header("authorization"),
                Some(format!("Bearer {EDGE_TO_REASONER_KEY}").as_str())
            );
            let sent: Value = serde_json::from_slice(&sent.body).unwrap();
            assert_eq!(sent["image"].is_string(), visual, "{context}");
            assert_eq!(sent["cues"].is_object(), detects, "{context}");
            if detects {
                assert_eq!(sent["cues"], detection["cues"], "{context}");
            }
            for concept in sent["concepts"].as_array().unwrap() {
                let keys: Vec<String> = object_keys(concept).into_iter().collect();
                assert_eq!(keys, ["description", "id"], "only ids and descriptions");
            }

            // The trace counts every large-model call the proxy saw; each carries the app's
            // request id end to end.
            let llm_calls = recorded(&stack.to_large_model).len() - before_llm;
            for call in &recorded(&stack.to_large_model)[before_llm..] {
                assert_eq!(call.header("x-request-id"), Some(request_id.as_str()));
            }
            assert_eq!(
                reasoning["upstream"]["calls"].as_u64().unwrap() as usize,
                llm_calls,
                "{context}"
            );
            let verifications = reasoning["verifications"].as_array().unwrap();
            if mode == "pure" {
                assert!(
                    object_keys(&reasoning["identities"]).is_empty(),
                    "{context}"
                );
                assert_eq!(llm_calls, 1, "pure asks the question alone: {context}");
            } else {
                assert_eq!(object_keys(&reasoning["identities"]), asked, "{context}");
            }
            if mode == "full" && detects {
                let present: Vec<String> = detection["cues"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(_, cue)| cue["present"] == true)
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(verifications.len(), 2 * present.len(), "{context}");
                assert_eq!(object_keys(&reasoning["actions"]), asked, "{context}");
            } else {
                assert!(verifications.is_empty(), "{context}");
            }
            if mode == "no_reflection" && detects {
                assert_eq!(reasoning["refined_cues"], detection["cues"], "{context}");
                for action in reasoning["actions"].as_object().unwrap().values() {
                    assert!(
                        ["unverified", "not_present"].contains(&action.as_str().unwrap()),
                        "{context}"
                    );
                }
            }
        }
    }

    // Privacy: no reference-image bytes and no embeddings ever left the edge; the query
    // image did (the check can see images), re-encoded by the edge without its metadata, so
    // its original bytes never did.
    let samples = sample_concepts().unwrap();
    let references: Vec<String> = samples
        .iter()
        .filter(|s| CONCEPTS.contains(&s.id.as_str()))
        .map(|s| base64_file(&s.image))
        .collect();
    let original = image.split_once(",").unwrap().1.to_string();
    let sent_by_edge = recorded(&stack.to_reasoner)
        .iter()
        .find_map(|call| {
            let body: Value = serde_json::from_str(&call.body_text()).ok()?;
            Some(body["image"].as_str()?.split_once(",")?.1.to_string())
        })
        .expect("a turn with the query image reached the reasoner");
    let query = sent_by_edge;
    let mut query_seen = 0;
    for call in recorded(&stack.to_reasoner)
        .iter()
        .chain(recorded(&stack.to_large_model).iter())
    {
        let text = call.body_text();
        for reference in &references {
            assert!(
                !text.contains(fingerprint(reference)),
                "reference image bytes in {} {}",
                call.method,
                call.path
            );
        }
        assert!(!text.contains("embedding"), "an embedding in {}", call.path);
        if text.contains(fingerprint(&query)) {
            query_seen += 1;
        }
        assert!(
            !text.contains(fingerprint(&original)),
            "the original query bytes in {}",
            call.path
        );
    }
    assert!(
        query_seen >= 4,
        "the query image reached the cloud in {query_seen} calls"
    );
    stack.stop().unwrap();
}

/// Reflection (Table 8) against the edge's own model: cues reported present are checked with
/// two yes/no questions each, per concept or in one batched call, and the rules applied.
#[tokio::test]
async fn reflection_uses_the_edge_model_per_concept_or_batched() {
    let stack = start(true).await;
    let cues = json!({
        "<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"},
        "<dug>": {"present": true, "location-absolute": "top-left", "location-relative": "behind <bo>"},
        "<brown-duck>": {"present": false}
    });
    let samples = sample_concepts().unwrap();
    let concepts: Vec<Value> = CONCEPTS
        .iter()
        .map(|id| {
            let sample = samples.iter().find(|s| s.id == *id).unwrap();
            json!({"id": format!("<{id}>"), "description": sample.description})
        })
        .collect();
    let mut previous_calls = None;
    for batched in [false, true] {
        let before = recorded(&stack.to_large_model).len();
        let response = stack
            .client
            .post(format!("{}/v1/reason", stack.reasoner_url))
            .bearer_auth(EDGE_TO_REASONER_KEY)
            .json(&json!({
                "image": query_image(),
                "question": "Where is <bo>?",
                "concepts": concepts,
                "cues": cues,
                "mode": "full",
                "options": {"batched_verification": batched}
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        let verifications = body["verifications"].as_array().unwrap();
        assert_eq!(
            verifications.len(),
            4,
            "two questions per present concept: {body}"
        );
        for check in verifications {
            assert!(
                ["yes", "no"].contains(&check["answer"].as_str().unwrap()),
                "{check}"
            );
        }
        // The rules, applied to whatever the model answered.
        for id in ["<bo>", "<dug>"] {
            let noes: Vec<&str> = verifications
                .iter()
                .filter(|c| c["concept"] == id && c["answer"] == "no")
                .map(|c| c["about"].as_str().unwrap())
                .collect();
            let refined = &body["refined_cues"][id];
            let action = body["actions"][id].as_str().unwrap();
            match noes.as_slice() {
                [] => {
                    assert_eq!(action, "kept");
                    assert_eq!(refined, &cues[id]);
                }
                [_, _] => {
                    assert_eq!(action, "suppressed");
                    assert_eq!(refined, &json!({"present": false}));
                }
                [one] => {
                    assert_eq!(action, format!("dropped_{one}").replace('-', "_"), "{body}");
                    assert!(refined.get(one).is_none(), "{body}");
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(body["actions"]["<brown-duck>"], "not_present");
        let calls = recorded(&stack.to_large_model)[before..].to_vec();
        assert_eq!(
            body["upstream"]["calls"].as_u64().unwrap() as usize,
            calls.len()
        );
        let verify_calls = calls
            .iter()
            .filter(|call| call.body_text().contains("Q1. Do you see"))
            .count();
        assert_eq!(verify_calls, if batched { 1 } else { 2 }, "{body}");
        if let Some(previous) = previous_calls {
            // Identities are cached after the first turn; batching saves one more call.
            assert!(calls.len() < previous, "{} vs {previous}", calls.len());
        }
        previous_calls = Some(calls.len());
    }
    stack.stop().unwrap();
}

/// `pseudonymize: true`: the cloud sees `<c1>`, `<c2>`, never the user's ids; the app gets its
/// ids back everywhere in the trace. (`<bo>` itself is in the paper's Table 7 example, so the
/// check uses two other concepts.) Streaming sends detection, verification, delta and done events.
#[tokio::test]
async fn pseudonyms_hide_ids_from_the_cloud_and_streaming_delivers_the_trace() {
    let stack = start(true).await;
    let body = ask(
        &stack,
        json!({
            "image": query_image(),
            "question": "Is <dug> next to <brown-duck>?",
            "concepts": ["dug", "brown-duck"],
            "mode": "no_reflection",
            "pseudonymize": true
        }),
        "e2e-pseudonyms",
    )
    .await;
    for call in recorded(&stack.to_reasoner)
        .iter()
        .chain(recorded(&stack.to_large_model).iter())
    {
        let text = call.body_text();
        for id in ["<dug>", "<brown-duck>", "\\u003cdug\\u003e"] {
            assert!(
                !text.contains(id),
                "{id} reached the cloud in {}: {}",
                call.path,
                &text[text.find(id).unwrap().saturating_sub(300)..]
            );
        }
    }
    let sent: Value = serde_json::from_slice(&recorded(&stack.to_reasoner)[0].body).unwrap();
    assert!(
        sent["question"].as_str().unwrap().contains("<c1>"),
        "{sent}"
    );
    let ids: BTreeSet<String> = ["<dug>", "<brown-duck>"].map(String::from).into();
    assert_eq!(object_keys(&body["reasoning"]["identities"]), ids, "{body}");
    assert_eq!(
        object_keys(&body["reasoning"]["refined_cues"]),
        ids,
        "{body}"
    );

    let response = stack
        .edge(reqwest::Method::POST, "/v1/ask")
        .json(&json!({
            "image": query_image(),
            "question": "What is <bo> doing?",
            "concepts": ["bo"],
            "mode": "full",
            "stream": true
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    // The tiny model's answer may be empty, so the deltas may be none.
    assert_eq!(events[..2], ["detection", "verification"], "{text}");
    assert_eq!(events.last(), Some(&"done"), "{text}");
    assert!(
        events[2..events.len() - 1]
            .iter()
            .all(|name| *name == "delta"),
        "{text}"
    );
    stack.stop().unwrap();
}

/// The README's app-developer section runs as written against a live stack.
#[tokio::test]
async fn the_readme_curl_examples_run() {
    let stack = start_empty(false).await;
    let readme = std::fs::read_to_string(slc_e2e::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("<!-- e2e:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- e2e:end -->").next())
        .expect("README.md has an e2e-marked section");
    let script: String = section
        .split("```sh")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(script.contains("curl"), "the section has curl examples");
    let output = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(slc_e2e::repo_root())
        .env("EDGE", &stack.edge_url)
        .env("SLC_KEY", slc_e2e::APP_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README examples failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"answer\""), "{stdout}");
    stack.stop().unwrap();
}

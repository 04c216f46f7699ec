//! Conversations, scenarios and the default concept rule over both real binaries, with the
//! recording proxies on both wires: what the reasoner and the large model received.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use slc_e2e::{Recorded, Stack, StackOptions, fixtures, sample_concepts};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_slc-demo"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Both binaries with `bo`, `brown-duck` and `dug` registered and room for two concepts a turn,
/// so the default rule cannot fall back on "every registered concept".
async fn start() -> Stack {
    let mut options = StackOptions::new(bin_dir());
    options.record = true;
    options.edge_env = vec![("SLC_MAX_CONCEPTS_PER_REQUEST".into(), "2".into())];
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("e2e").replace("::", "-");
    options.log_dir = Some(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e-logs")
            .join(test),
    );
    let stack = Stack::start(options).await.expect("starting the stack");
    let samples = sample_concepts().unwrap();
    for id in ["bo", "brown-duck", "dug"] {
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

fn query_image() -> (String, String) {
    let bytes = std::fs::read(fixtures().join("query/bo-on-the-sofa.jpg")).unwrap();
    let url = format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    (url, hex::encode(sha2::Sha256::digest(&bytes)))
}

async fn call(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = stack.edge(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn recorded(recording: &slc_e2e::Recording) -> Vec<Recorded> {
    recording.lock().unwrap().clone()
}

fn last_json(recording: &slc_e2e::Recording) -> Value {
    serde_json::from_slice(&recorded(recording).last().unwrap().body).unwrap()
}

fn concept_ids(reason_request: &Value) -> Vec<String> {
    reason_request["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|concept| concept["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Image parts in a chat-completions body.
fn image_parts(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["content"].as_array())
        .flatten()
        .filter(|part| part["type"] == "image_url")
        .count()
}

#[tokio::test]
async fn a_two_turn_conversation_carries_text_and_scope_but_no_earlier_image() {
    let stack = start().await;
    let (image, image_sha256) = query_image();
    let (status, created) = call(&stack, reqwest::Method::POST, "/v1/conversations", None).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let first = json!({"image": image, "question": "What is <bo> doing?", "concepts": ["bo"],
        "mode": "full", "pseudonymize": true, "conversation_id": id});
    let (status, first) = call(&stack, reqwest::Method::POST, "/v1/ask", Some(first)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["conversation"], json!({"id": id, "turn": 0}));
    assert!(
        last_json(&stack.to_reasoner).get("history").is_none(),
        "a first turn has none"
    );

    // No concepts, no mention: the pronoun's concept comes from the conversation's scope.
    let llm_before = recorded(&stack.to_large_model).len();
    let second = json!({"image": image, "question": "And where is he now?", "mode": "full",
        "pseudonymize": true, "conversation_id": id});
    let (status, second) = call(&stack, reqwest::Method::POST, "/v1/ask", Some(second)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["conversation"]["turn"], 1);
    let reason = last_json(&stack.to_reasoner);
    // The same pseudonym as in the first turn, and the first turn's text as history.
    assert_eq!(concept_ids(&reason), ["<c1>"], "{reason}");
    let history = reason["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{reason}");
    assert_eq!(history[0]["question"], "What is <c1> doing?");
    assert_eq!(
        history[0].as_object().unwrap().len(),
        2,
        "text only: {reason}"
    );
    let answer_text = first["answer"].as_str().unwrap();
    if !answer_text.contains(['<', 'b', 'B']) {
        assert_eq!(history[0]["answer"], answer_text);
    }
    // The large model's answer call: the earlier turn as user/assistant text, one image only.
    let answer_call: Value =
        serde_json::from_slice(&recorded(&stack.to_large_model).last().unwrap().body).unwrap();
    assert!(recorded(&stack.to_large_model).len() > llm_before);
    let messages = answer_call["messages"].as_array().unwrap();
    let at = messages
        .iter()
        .position(|m| m["role"] == "user" && m["content"] == "What is <c1> doing?")
        .unwrap_or_else(|| panic!("the first question is a prior message: {answer_call}"));
    assert_eq!(messages[at + 1]["role"], "assistant");
    assert_eq!(messages[at + 1]["content"], history[0]["answer"]);
    assert_eq!(
        image_parts(&answer_call),
        1,
        "only the current turn's image"
    );
    assert_eq!(second["reasoning"]["history"]["turns_sent"], 1, "{second}");
    assert!(
        second["reasoning"]["history"]["budget_chars"]
            .as_u64()
            .unwrap()
            > 0
    );

    let (status, stored) = call(
        &stack,
        reqwest::Method::GET,
        &format!("/v1/conversations/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    let turns = stored["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{stored}");
    assert_eq!(turns[1]["question"], "And where is he now?");
    assert_eq!(turns[1]["concepts"], json!(["<bo>"]));
    assert_eq!(turns[1]["image_sha256"], image_sha256);
    assert!(!stored.to_string().contains("base64"), "no image is stored");
    assert_eq!(turns[1]["trace"]["history"]["turns_sent"], 1);

    let (status, _) = call(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/conversations/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = call(
        &stack,
        reqwest::Method::GET,
        &format!("/v1/conversations/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, gone["error"]["type"].as_str()),
        (404, Some("unknown_conversation"))
    );
    stack.stop().unwrap();
}

#[tokio::test]
async fn scenarios_and_the_default_concept_rule() {
    let stack = start().await;
    let (image, _) = query_image();

    // Neither concepts nor a scenario, three registered and two allowed: name them.
    let ask = json!({"question": "Who is here?", "mode": "full", "image": image});
    let (status, body) = call(&stack, reqwest::Method::POST, "/v1/ask", Some(ask)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("concepts_required")),
        "{body}"
    );
    // A mention names the turn's concepts.
    let ask = json!({"question": "Is <dug> on the sofa?", "mode": "no_detector", "image": image});
    let (status, body) = call(&stack, reqwest::Method::POST, "/v1/ask", Some(ask)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(concept_ids(&last_json(&stack.to_reasoner)), ["<dug>"]);
    let ask = json!({"question": "Is <nobody> here?", "mode": "pure"});
    let (status, body) = call(&stack, reqwest::Method::POST, "/v1/ask", Some(ask)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("unknown_concept")),
        "{body}"
    );

    let scenario =
        json!({"id": "sofa", "concepts": ["bo", "<dug>"], "description": "the living room"});
    let (status, created) = call(
        &stack,
        reqwest::Method::POST,
        "/v1/scenarios",
        Some(scenario.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["concepts"].clone(), created["revision"].clone()),
        (json!(["bo", "dug"]), json!(1))
    );
    let (status, _) = call(
        &stack,
        reqwest::Method::POST,
        "/v1/scenarios",
        Some(scenario),
    )
    .await;
    assert_eq!(status, 409);

    let ask = json!({"question": "Who is on the sofa?", "scenario": "sofa", "mode": "full", "image": image});
    let (status, body) = call(&stack, reqwest::Method::POST, "/v1/ask", Some(ask)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        concept_ids(&last_json(&stack.to_reasoner)),
        ["<bo>", "<dug>"]
    );
    let cues: Vec<&String> = body["detection"]["cues"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(cues, ["<bo>", "<dug>"]);
    let adapter = body["detection"]["adapter"].clone();
    // Detection by scenario reuses the choice (the cache's counter), until the members change.
    let detect = json!({"image": image, "scenario": "sofa"});
    let (status, detected) = call(
        &stack,
        reqwest::Method::POST,
        "/v1/detect",
        Some(detect.clone()),
    )
    .await;
    assert_eq!(status, 200, "{detected}");
    assert_eq!(detected["adapter"], adapter);
    assert_eq!(scenario_choices(&stack).await, (1, 1));
    let update = json!({"concepts": ["brown-duck"]});
    let (status, updated) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/scenarios/sofa",
        Some(update),
    )
    .await;
    assert_eq!(
        (status, updated["revision"].clone()),
        (200, json!(2)),
        "{updated}"
    );
    let (status, detected) = call(&stack, reqwest::Method::POST, "/v1/detect", Some(detect)).await;
    assert_eq!(status, 200, "{detected}");
    let cues: Vec<&String> = detected["cues"].as_object().unwrap().keys().collect();
    assert_eq!(cues, ["<brown-duck>"]);
    assert_eq!(scenario_choices(&stack).await, (1, 2));

    // Deleting a member takes it out of the scenario.
    let (status, _) = call(
        &stack,
        reqwest::Method::DELETE,
        "/v1/concepts/brown-duck",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, sofa) = call(&stack, reqwest::Method::GET, "/v1/scenarios/sofa", None).await;
    assert_eq!(sofa["concepts"], json!([]), "{sofa}");
    let (status, _) = call(&stack, reqwest::Method::DELETE, "/v1/scenarios/sofa", None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&stack, reqwest::Method::GET, "/v1/scenarios/sofa", None).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("unknown_scenario"))
    );
    stack.stop().unwrap();
}

/// `slc_detector_scenario_adapter_choices_total` by source: (cache, computed).
async fn scenario_choices(stack: &Stack) -> (u64, u64) {
    let text = stack
        .edge(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |source: &str| {
        let prefix = format!("slc_detector_scenario_adapter_choices_total{{source=\"{source}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |value| value.trim().parse().unwrap())
    };
    (count("cache"), count("computed"))
}

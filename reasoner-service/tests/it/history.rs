//! A conversation's earlier turns: only the answer call gets them, as user/assistant messages
//! before its own, text only, the oldest dropped past the budget, and the trace says so.

use serde_json::{Value, json};

use crate::helpers::*;

const BO: &str = "<bo> is a cute golden retriever puppy with a playful expression.";

fn request(history: Value) -> Value {
    json!({
        "question": "And where is <bo> now?",
        "concepts": [{"id": "<bo>", "description": BO}],
        "mode": "full",
        "image": query_image_base64(),
        "cues": {"<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the grass"}},
        "history": history,
    })
}

#[tokio::test]
async fn the_answer_call_gets_the_newest_turns_that_fit_the_budget() {
    let upstream = ScriptedUpstream::answering(
        &[("<bo>", "a golden retriever puppy", "playful")],
        |_| "Yes. Yes.".into(),
        "<bo> is by the door.",
    )
    .await;
    // The newest two turns (23 + 20 characters) fit, the oldest (68) does not.
    let app = spawn_app_with(&upstream, |config| config.history_budget_chars = 45).await;
    let history = json!([
        {"question": "Describe the whole garden?", "answer": "A long answer about the garden, its trees."},
        {"question": "What is <bo> doing?", "answer": "R"},
        {"question": "Is he happy?", "answer": "Yes, he is."},
    ]);
    let (status, body) = app.post("/v1/reason", &request(history)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["history"],
        json!({"budget_chars": 45, "turns_received": 3, "turns_sent": 2, "turns_dropped": 1, "chars_sent": 43})
    );
    let answer = &upstream.requests_of("answer")[0];
    let messages = answer.body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    assert_eq!(messages[1]["content"], "What is <bo> doing?");
    assert_eq!(messages[2]["content"], "R");
    assert_eq!(messages[4]["content"], "Yes, he is.");
    assert_eq!(
        answer.image_urls().len(),
        1,
        "only the current turn's image"
    );
    assert!(
        messages[5]["content"].is_array(),
        "the current turn carries the image"
    );
    // Identity and verification are about the image and descriptions alone.
    for call in upstream
        .requests_of("identity")
        .iter()
        .chain(&upstream.requests_of("verify"))
    {
        assert!(!call.body.to_string().contains("Is he happy?"));
    }
    app.stop().await;
}

#[tokio::test]
async fn history_over_its_caps_is_refused_before_any_call() {
    let upstream = ScriptedUpstream::answering(&[], |_| "Yes.".into(), "ok").await;
    let app = spawn_app(&upstream).await;
    let turn = json!({"question": "q", "answer": "a"});
    let too_many = Value::Array(vec![
        turn.clone();
        shared_types::limits::MAX_HISTORY_TURNS + 1
    ]);
    let (status, body) = app.post("/v1/reason", &request(too_many)).await;
    assert_eq!(
        (status.as_u16(), error_type(&body)),
        (413, "too_many_history_turns".into())
    );
    let long = "x".repeat(shared_types::limits::MAX_HISTORY_TEXT_CHARS * 2 + 1);
    let (status, body) = app
        .post(
            "/v1/reason",
            &request(json!([{"question": "q", "answer": long}])),
        )
        .await;
    assert_eq!(
        (status.as_u16(), error_type(&body)),
        (413, "history_text_too_long".into())
    );
    // A prior turn has no field that could carry an image.
    let with_image = json!([{"question": "q", "answer": "a", "image": query_image_base64()}]);
    let (status, _) = app.post("/v1/reason", &request(with_image)).await;
    assert_eq!(status.as_u16(), 422);
    assert!(upstream.requests().is_empty());
    app.stop().await;
}

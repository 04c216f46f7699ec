//! `/v1/detect` end to end: the Table 6 prompt, the schema for exactly the requested ids, the
//! adapter choice, normalization, and the queue's 429 / deadline / client-gone behaviour.

use std::time::Duration;

use serde_json::{Value, json};
use slc_detector::detection::TABLE6_SYSTEM_PROMPT;
use slc_detector::model::Role;

use crate::helpers::{
    TestOptions, assert_error, base64_of, fixture, register, solid_png, spawn_app,
};

/// The Table 6 system prompt as the paper prints it (appendix B.1), typed out independently
/// of the source constant; the model must receive exactly this text.
const TABLE6_EXPECTED_LINES: &[&str] = &[
    "You are a high-precision concept detector.",
    "Task",
    "You should inspect the image and output **one** JSON object that **covers every** concept in the **Concept List** provided by the user while conforming to the schema below.",
    "For each concept <concept_id> in the list:",
    "- If *visible*, set:",
    " - “present”: `true`",
    " - “location-absolute”: “concise area, e.g. “top-left quadrant”",
    " - “location-relative”: “spatial relation, e.g. “to the left of the person in black suit”",
    "- If *not visible*, set:",
    " - “present”: `false` → omit all other keys",
    "Rules",
    "- Output plain English text only—no Markdown, no code fences.",
    "- Keep every concept ID enclosed in angle brackets (<>).",
    "- If `present = false`, omit all other keys.",
    "- Boolean literals must be lowercase `true/false`.",
    "- Do not add any extra keys, comments, or explanatory text.",
];

#[tokio::test]
async fn detect_sends_table6_prompt_and_an_exact_schema() {
    let control = crate::doubles::DoubleControl::default();
    *control.adapters.lock().unwrap() = vec!["meta-red".into(), "meta-blue".into()];
    let app = spawn_app(TestOptions {
        control,
        meta_concepts: vec![
            ("meta-red".into(), vec![1.0, 0.0, 0.0]),
            ("meta-blue".into(), vec![0.0, 0.0, 1.0]),
        ],
        ..TestOptions::default()
    })
    .await;
    register(
        &app,
        "bo",
        "<bo> is a Shiba Inu with a black collar.",
        &[solid_png([250, 10, 10], 8, 8)],
    )
    .await;
    register(
        &app,
        "mam",
        "<mam> is a grey tabby cat.",
        &[solid_png([240, 30, 20], 8, 8)],
    )
    .await;
    register(
        &app,
        "blue",
        "<blue> is a blue mug.",
        &[solid_png([0, 0, 255], 8, 8)],
    )
    .await;
    *app.control.present_ids.lock().unwrap() = vec!["<mam>".into()];

    let query = fixture("bo_test_3.jpg");
    let response = app
        .post_json(
            "/v1/detect",
            &json!({"image": base64_of(&query), "concepts": ["mam", "<bo>"]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();

    let seen = app.control.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.roles, [Role::System, Role::User]);
    assert_eq!(request.system_text, TABLE6_SYSTEM_PROMPT);
    for line in TABLE6_EXPECTED_LINES {
        assert!(
            request.system_text.lines().any(|actual| actual == *line),
            "system prompt lacks the Table 6 line {line:?}"
        );
    }
    assert_eq!(
        request.user_text,
        "Concept List\n\n<mam>: <mam> is a grey tabby cat.\n<bo>: <bo> is a Shiba Inu with a black collar."
    );
    assert_eq!(
        request.image_hashes,
        [hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&query))]
    );
    assert_eq!(request.temperature, 0.0, "detection decodes greedily");
    let schema = request.json_schema.as_ref().unwrap();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["<bo>", "<mam>"]);
    let mut properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    properties.sort();
    assert_eq!(properties, ["<bo>", "<mam>"]);
    assert_eq!(schema["additionalProperties"], false);
    // Both concepts are reddish, so the red meta-concept's adapter is chosen (paper Eq. 1).
    assert_eq!(request.adapter.as_deref(), Some("meta-red"));

    assert_eq!(
        body["cues"],
        json!({
            "<bo>": {"present": false},
            "<mam>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"}
        })
    );
    assert_eq!(body["adapter"]["name"], "meta-red");
    assert!(body["adapter"]["similarity"].as_f64().unwrap() > 0.9);
    let usage = &body["usage"];
    assert!(usage["decode_steps"].as_u64().unwrap() < usage["completion_tokens"].as_u64().unwrap());
    assert!(body["timings"]["total_ms"].as_f64().unwrap() > 0.0);

    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_detector_adapter_selections_total{adapter=\"meta-red\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slc_detector_http_requests_total{route=\"/v1/detect\",status=\"200\"} 1")
    );
    assert!(metrics.contains("slc_detector_invalid_model_outputs_total 0"));
    assert!(metrics.contains("slc_detector_jump_forward_steps_saved_total"));
    assert!(metrics.contains("slc_detector_time_to_first_token_seconds_count 1"));
    app.stop().await;
}

#[tokio::test]
async fn invalid_model_output_is_counted_and_reported() {
    let app = spawn_app(TestOptions::default()).await;
    register(&app, "bo", "<bo>", &[solid_png([1, 2, 3], 4, 4)]).await;
    *app.control.break_cue_output.lock().unwrap() = true;
    let response = app
        .post_json(
            "/v1/detect",
            &json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "concepts": ["bo"]}),
        )
        .await;
    assert_error(response, 500, "invalid_model_output").await;
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("slc_detector_invalid_model_outputs_total 1"));
    app.stop().await;
}

#[tokio::test]
async fn full_queue_gets_429_with_retry_after_and_deadlines_give_504() {
    let app = spawn_app(TestOptions::tweak(|config| {
        config.queue_size = 1;
        config.request_deadline_secs = 1.5;
    }))
    .await;
    register(&app, "bo", "<bo>", &[solid_png([1, 2, 3], 4, 4)]).await;
    app.control.close_gate();
    let body = json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "concepts": ["bo"]});
    let url = app.url("/v1/detect");
    let first = tokio::spawn(app.client.post(&url).json(&body).send());
    // Wait until the worker holds the first request, then fill the one queue slot.
    for _ in 0..100 {
        if !app.control.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = tokio::spawn(app.client.post(&url).json(&body).send());
    for _ in 0..100 {
        if app.state.workers.queue_depth() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(third.headers()["retry-after"], "1");
    assert_error(third, 429, "overloaded").await;

    // The gate stays closed past the deadline: the first times out, the second never runs.
    assert_error(first.await.unwrap().unwrap(), 504, "deadline_exceeded").await;
    assert_error(second.await.unwrap().unwrap(), 504, "deadline_exceeded").await;
    app.control.open_gate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.control.seen().len(),
        1,
        "the expired queued request never reached the model"
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_detector_http_requests_total{route=\"/v1/detect\",status=\"429\"} 1")
    );
    assert!(
        metrics.contains("slc_detector_dropped_requests_total"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn requests_whose_client_left_are_dropped_before_the_model() {
    let app = spawn_app(TestOptions::default()).await;
    register(&app, "bo", "<bo>", &[solid_png([1, 2, 3], 4, 4)]).await;
    app.control.close_gate();
    let body = json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "concepts": ["bo"]});
    let url = app.url("/v1/detect");
    let blocker = tokio::spawn(app.client.post(&url).json(&body).send());
    for _ in 0..100 {
        if !app.control.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // This client gives up while its request waits in the queue.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        impatient
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap_err()
            .is_timeout()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.control.open_gate();
    assert_eq!(blocker.await.unwrap().unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.control.seen().len(),
        1,
        "the abandoned request never reached the model"
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_detector_dropped_requests_total{reason=\"client_gone\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn concepts_embedded_by_another_clip_get_no_adapter() {
    let control = crate::doubles::DoubleControl::default();
    *control.adapters.lock().unwrap() = vec!["meta-red".into()];
    let app = spawn_app(TestOptions {
        control,
        meta_concepts: vec![("meta-red".into(), vec![1.0, 0.0, 0.0])],
        ..TestOptions::default()
    })
    .await;
    let png = solid_png([250, 0, 0], 4, 4);
    app.state
        .registry
        .scoped(slc_detector::tenants::TenantId::local())
        .insert(
            &shared_types::ConceptId::parse("old").unwrap(),
            "<old> was embedded by an older CLIP.",
            slc_detector::registry::EmbeddedImages {
                images: vec![slc_detector::registry::NewImage {
                    sha256: "00".repeat(32),
                    content_type: "image/png".into(),
                    width: 4,
                    height: 4,
                    bytes: png.clone(),
                }],
                embedding: vec![1.0, 0.0, 0.0],
                clip_model: "clip-vit-base-patch32".into(),
            },
        )
        .await
        .unwrap();
    let response = app
        .post_json(
            "/v1/detect",
            &json!({"image": base64_of(&png), "concepts": ["old"]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["adapter"].is_null(), "{body}");
    assert_eq!(app.control.seen()[0].adapter, None);
    app.stop().await;
}

/// Decoded images share one memory budget: an image that alone needs more is 413, and while
/// the images of requests in flight hold it, the next image is 429 at once (it is not decoded
/// at all); the budget comes back when those requests end.
#[tokio::test]
async fn decoded_images_share_one_memory_budget() {
    // 1 MiB: a 300x300 photo needs 300*300*6 bytes = 527 KiB while it decodes.
    let app = spawn_app(TestOptions::tweak(|config| config.decode_budget_mib = 1)).await;
    register(&app, "bo", "<bo>", &[solid_png([1, 2, 3], 4, 4)]).await;
    let body = |side: u32| json!({"image": base64_of(&solid_png([9, 9, 9], side, side)), "concepts": ["bo"]});
    let message = assert_error(
        app.post_json("/v1/detect", &body(500)).await,
        413,
        "image_too_large",
    )
    .await;
    assert!(message.contains("decode budget"), "{message}");

    app.control.close_gate();
    let url = app.url("/v1/detect");
    let held = tokio::spawn(app.client.post(&url).json(&body(300)).send());
    for _ in 0..200 {
        if !app.control.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        app.control.seen().len(),
        1,
        "the first request reached the model"
    );
    let refused = app.post_json("/v1/detect", &body(300)).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_error(refused, 429, "overloaded").await;
    app.control.open_gate();
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        app.post_json("/v1/detect", &body(300)).await.status(),
        200,
        "the budget came back"
    );
    app.stop().await;
}

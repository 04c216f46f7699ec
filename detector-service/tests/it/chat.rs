//! `/v1/chat/completions` and `/v1/models`, with raw HTTP and with the official `openai`
//! Python client.

use std::process::Command;

use serde_json::{Value, json};

use crate::doubles::BASE_MODEL;
use crate::helpers::{TestOptions, assert_error, data_url, fixture, spawn_app};

#[tokio::test]
async fn chat_completion_maps_the_request_onto_the_model() {
    let control = crate::doubles::DoubleControl::default();
    *control.adapters.lock().unwrap() = vec!["meta-3".into()];
    let app = spawn_app(TestOptions {
        control,
        ..TestOptions::default()
    })
    .await;
    *app.control.reply_text.lock().unwrap() = "Yes, there is a dog. END and more".into();
    let photo = fixture("bo_test_3.jpg");
    let response = app
        .post_json(
            "/v1/chat/completions",
            &json!({
                "model": "meta-3",
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": data_url(&photo, "image/jpeg")}},
                        {"type": "text", "text": "Is there a dog?"}
                    ]}
                ],
                "max_tokens": 50,
                "temperature": 0,
                "top_p": 0.9,
                "seed": 7,
                "stop": ["END"],
                "response_format": {"type": "text"},
                "frequency_penalty": 0
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "meta-3");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Yes, there is a dog. "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let seen = &app.control.seen()[0];
    assert_eq!(seen.adapter.as_deref(), Some("meta-3"));
    assert_eq!(seen.system_text, "You are a helpful assistant.");
    assert_eq!(seen.user_text, "Is there a dog?");
    assert_eq!(seen.image_hashes.len(), 1);
    assert_eq!(seen.stop, ["END"]);
    assert_eq!(seen.max_new_tokens, 50);

    assert_eq!(app.model_ids().await, [BASE_MODEL, "meta-3"]);

    // response_format json_schema reaches the model; length-capped output says "length".
    let response = app.post_json("/v1/chat/completions", &json!({
            "model": BASE_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": ["a"]}}}
        })).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        app.control.seen()[1].json_schema.as_ref().unwrap()["required"],
        json!(["a"])
    );
    assert_eq!(app.control.seen()[1].adapter, None);

    for (request, status, kind) in [
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "model_not_found",
        ),
        (
            json!({"model": BASE_MODEL, "messages": []}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": BASE_MODEL, "messages": [{"role": "tool", "content": "x"}]}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": BASE_MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": BASE_MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": BASE_MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
            422,
            "invalid_image",
        ),
    ] {
        let response = app.post_json("/v1/chat/completions", &request).await;
        assert_error(response, status, kind).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn chat_completion_streams_chunks_then_done() {
    let app = spawn_app(TestOptions::default()).await;
    *app.control.reply_text.lock().unwrap() = "The dog sleeps.".into();
    let response = app
        .post_json(
            "/v1/chat/completions",
            &json!({
                "model": BASE_MODEL,
                "messages": [{"role": "user", "content": "What does the dog do?"}],
                "stream": true,
                "stream_options": {"include_usage": true}
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "The dog sleeps.");
    assert!(chunks.len() >= 5, "streamed piece by piece: {text}");
    let finish = chunks
        .iter()
        .find(|c| {
            c["choices"]
                .get(0)
                .is_some_and(|c| !c["finish_reason"].is_null())
        })
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    app.stop().await;
}

fn python() -> String {
    std::env::var("SLC_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/slc/torch-2.11.0/bin/python",
            std::env::var("HOME").unwrap()
        )
    })
}

/// The official client against the real engine on the tiny checkpoint.
#[tokio::test]
async fn the_official_openai_python_client_works() {
    let app = crate::real_engine::spawn_real().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/openai_client.py");
    let photo =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bo_test_3.jpg");
    let base_url = app.url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(base_url)
            .arg(crate::real_engine::BASE_MODEL)
            .arg(photo)
            .output()
            .expect("running the Python interpreter (set SLC_PYTHON)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "openai client script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        report["models"],
        json!([crate::real_engine::BASE_MODEL, "bo", "brown-duck", "dug"])
    );
    let completion = report["completion"].as_str().unwrap();
    assert!(!completion.is_empty(), "{report}");
    assert_eq!(
        report["completion_again"], report["completion"],
        "seeded greedy is repeatable"
    );
    assert_eq!(report["streamed"], report["unstreamed"], "{report}");
    assert!(!report["streamed"].as_str().unwrap().is_empty(), "{report}");
    assert_eq!(report["json_mode_finish"], "stop", "{report}");
    assert!(report["json_mode_object"].is_object(), "{report}");
    assert_eq!(report["not_found_status"], 404);
    app.stop().await;
}

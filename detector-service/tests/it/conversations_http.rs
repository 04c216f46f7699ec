//! `/v1/conversations` and `/v1/scenarios` over HTTP on the edge, against a scripted reasoner
//! (a real loopback server that records each `/v1/reason` body): pseudonyms that stay the same
//! across turns, the scope's order, a concept's deletion taking its turns, and typed errors.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use shared_types::{Mode, ReasonRequest, ReasonResponse};

use crate::helpers::{TestApp, TestOptions, assert_error, register, solid_png, spawn_app};

type Received = Arc<Mutex<Vec<ReasonRequest>>>;

/// Answers "about <c1>, <c2>" with the ids it was given.
async fn scripted_reasoner() -> (SocketAddr, Received) {
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let recorder = received.clone();
    let router = Router::new().route(
        "/v1/reason",
        post(move |axum::Json(request): axum::Json<ReasonRequest>| {
            let recorder = recorder.clone();
            async move {
                let ids: Vec<&str> = request.concepts.iter().map(|c| c.id.as_str()).collect();
                let response = ReasonResponse {
                    answer: format!("about {}", ids.join(", ")),
                    mode: Mode::Full,
                    refined_cues: None,
                    identities: Default::default(),
                    verifications: vec![],
                    actions: Default::default(),
                    upstream: Default::default(),
                    timings: Default::default(),
                    history: None,
                };
                recorder.lock().unwrap().push(request);
                axum::Json(response)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (address, received)
}

async fn ask(app: &TestApp, body: Value) -> Value {
    let response = app.post_json("/v1/ask", &body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(request: &ReasonRequest) -> Vec<&str> {
    request.concepts.iter().map(|c| c.id.as_str()).collect()
}

#[tokio::test]
async fn pseudonyms_and_scope_carry_across_turns_and_a_deleted_concept_takes_its_turns() {
    let (address, received) = scripted_reasoner().await;
    let app = spawn_app(TestOptions::reasoner(address)).await;
    register(
        &app,
        "bo",
        "<bo> is a Shiba Inu.",
        &[solid_png([200, 0, 0], 8, 8)],
    )
    .await;
    register(
        &app,
        "mam",
        "<mam> is a grey cat.",
        &[solid_png([90, 90, 90], 8, 8)],
    )
    .await;
    let created = app.post_json("/v1/conversations", &json!({})).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let turn = |question: &str, concepts: Option<Value>| {
        let mut body = json!({"question": question, "pseudonymize": true, "conversation_id": id});
        if let Some(concepts) = concepts {
            body["concepts"] = concepts;
        }
        body
    };
    ask(&app, turn("Is <mam> here?", Some(json!(["mam"])))).await;
    let second = ask(&app, turn("And <bo>?", Some(json!(["bo"])))).await;
    assert_eq!(second["answer"], "about <bo>", "aliases map back");
    // No concepts: the scope (newest turn first), then the rest of the registry.
    let third = ask(&app, turn("And her?", None)).await;
    assert_eq!(third["conversation"]["turn"], 2);
    {
        let received = received.lock().unwrap();
        assert_eq!(ids(&received[0]), ["<c1>"]);
        assert_eq!(
            ids(&received[1]),
            ["<c2>"],
            "<mam> keeps <c1>, so <bo> is <c2>"
        );
        assert_eq!(ids(&received[2]), ["<c2>", "<c1>"]);
        let history = &received[2].history;
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].question, "Is <c1> here?");
        assert_eq!(history[0].answer, "about <c1>");
        assert_eq!(history[1].question, "And <c2>?");
        assert!(!serde_json::to_string(&received[2]).unwrap().contains("mam"));
    }

    // Deleting <mam> deletes the turns that used it; the one about <bo> alone stays.
    let deleted = app
        .client
        .delete(app.url("/v1/concepts/mam"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let stored: Value = app
        .client
        .get(app.url(&format!("/v1/conversations/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let questions: Vec<&str> = stored["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["question"].as_str().unwrap())
        .collect();
    assert_eq!(questions, ["And <bo>?"], "{stored}");
    assert!(!stored.to_string().contains("mam"), "{stored}");

    let unknown = json!({"question": "Q?", "conversation_id": "conv_nope"});
    assert_error(
        app.post_json("/v1/ask", &unknown).await,
        404,
        "unknown_conversation",
    )
    .await;
    let gone = app
        .client
        .delete(app.url("/v1/conversations/conv_nope"))
        .send()
        .await
        .unwrap();
    assert_error(gone, 404, "unknown_conversation").await;
    app.stop().await;
}

#[tokio::test]
async fn scenario_requests_are_validated() {
    let (address, received) = scripted_reasoner().await;
    let app = spawn_app(TestOptions::reasoner(address)).await;
    register(
        &app,
        "bo",
        "<bo> is a Shiba Inu.",
        &[solid_png([200, 0, 0], 8, 8)],
    )
    .await;
    let cases = [
        (json!({"id": "s", "concepts": []}), 422, "invalid_request"),
        (
            json!({"id": "s", "concepts": ["bo", "<bo>"]}),
            422,
            "invalid_request",
        ),
        (
            json!({"id": "s", "concepts": ["nobody"]}),
            404,
            "unknown_concept",
        ),
        (
            json!({"id": "no spaces", "concepts": ["bo"]}),
            422,
            "invalid_concept_id",
        ),
        (
            json!({"id": "s", "concepts": ["bo"], "extra": 1}),
            422,
            "invalid_request",
        ),
        (
            json!({"id": "s", "concepts": (0..17).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
            413,
            "too_many_concepts",
        ),
    ];
    for (body, status, kind) in cases {
        assert_error(app.post_json("/v1/scenarios", &body).await, status, kind).await;
    }
    let created = app
        .post_json("/v1/scenarios", &json!({"id": "s", "concepts": ["bo"]}))
        .await;
    assert_eq!(created.status(), 201);
    let unknown = json!({"question": "Q?", "scenario": "other"});
    assert_error(
        app.post_json("/v1/ask", &unknown).await,
        404,
        "unknown_scenario",
    )
    .await;
    let by_scenario = ask(
        &app,
        json!({"question": "Q?", "scenario": "s", "concepts": []}),
    )
    .await;
    assert_eq!(by_scenario["answer"], "about <bo>");
    assert_eq!(ids(&received.lock().unwrap()[0]), ["<bo>"]);
    app.stop().await;
}

//! `/v1/ask` against a scripted reasoner: a real HTTP server on loopback that records what it
//! received and answers like `slc-reasoner` would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use shared_types::{
    Identity, Mode, ReasonRequest, ReasonResponse, ReasonTimings, ReflectionAction, UpstreamStats,
    Verification, VerifiedField, YesNo,
};

use crate::helpers::{
    TestOptions, assert_error, base64_of, fixture, register, solid_png, spawn_app,
};

#[derive(Clone, Copy)]
pub(crate) enum Behaviour {
    Answer,
    Sleep(Duration),
    Fail,
}

/// Headers and raw body of each request the scripted reasoner received.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

#[derive(Clone)]
pub(crate) struct ScriptedReasoner {
    pub(crate) address: SocketAddr,
    pub(crate) received: Received,
}

pub(crate) async fn scripted_reasoner(behaviour: Behaviour) -> ScriptedReasoner {
    let received = Arc::new(Mutex::new(Vec::new()));
    let recorder = received.clone();
    let router = Router::new().route(
        "/v1/reason",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let recorder = recorder.clone();
            async move {
                recorder.lock().unwrap().push((headers, body.to_vec()));
                let streamed = serde_json::from_slice::<Value>(&body)
                    .is_ok_and(|request| request["stream"] == true);
                match behaviour {
                    Behaviour::Sleep(duration) => tokio::time::sleep(duration).await,
                    Behaviour::Fail if streamed => {
                        // The real reasoner's way: the stream is open, the turn fails in it.
                        let failure = json!({"status": 500, "error": {"type": "upstream_error", "message": "GPT-4o is down"}});
                        return sse_response(&[("error", failure)]);
                    }
                    Behaviour::Fail => {
                        return (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(json!({"error": {"type": "upstream_error", "message": "GPT-4o is down"}})),
                        )
                            .into_response();
                    }
                    Behaviour::Answer => {}
                }
                // Parse strictly: the contract type refuses unknown fields.
                let request: ReasonRequest = serde_json::from_slice(&body).unwrap();
                let response = answer_for(&request);
                if !request.stream {
                    return axum::Json(serde_json::to_value(response).unwrap()).into_response();
                }
                // As the real reasoner streams: the refined cues, the answer word by word
                // (an alias split across two deltas), then the whole response.
                let mut events = Vec::new();
                if let Some(cues) = &response.refined_cues {
                    events.push(("verification", json!({"refined_cues": cues})));
                }
                let answer = response.answer.clone();
                let (head, tail) = answer.split_at(2);
                events.push(("delta", json!({"text": head})));
                for word in tail.split_inclusive(' ') {
                    events.push(("delta", json!({"text": word})));
                }
                events.push(("done", serde_json::to_value(response).unwrap()));
                sse_response(&events)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    ScriptedReasoner { address, received }
}

/// A whole event stream in one body.
fn sse_response(events: &[(&str, Value)]) -> axum::response::Response {
    let body: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// Answers about the first concept by the id it was given, as the real reasoner would.
fn answer_for(request: &ReasonRequest) -> ReasonResponse {
    let first = request
        .concepts
        .first()
        .map(|c| c.id.clone())
        .unwrap_or_default();
    let mut identities = BTreeMap::new();
    let mut actions = BTreeMap::new();
    for concept in &request.concepts {
        identities.insert(
            concept.id.clone(),
            Identity {
                category: "a dog".into(),
                attributes: format!("looks like {}", concept.id),
            },
        );
        actions.insert(concept.id.clone(), ReflectionAction::Kept);
    }
    ReasonResponse {
        answer: format!("{first} is sleeping on the sofa."),
        mode: request.mode,
        refined_cues: request.cues.clone(),
        identities,
        verifications: vec![Verification {
            concept: first.clone(),
            about: VerifiedField::LocationAbsolute,
            question: format!("Is {first} in the center?"),
            raw_answer: "Yes.".into(),
            answer: YesNo::Yes,
        }],
        actions,
        upstream: UpstreamStats {
            calls: 3,
            model: "gpt-4o".into(),
            ..UpstreamStats::default()
        },
        timings: ReasonTimings::default(),
        history: None,
    }
}

#[tokio::test]
async fn ask_sends_only_what_may_cross_and_maps_pseudonyms_back() {
    let reasoner = scripted_reasoner(Behaviour::Answer).await;
    let app = spawn_app(TestOptions::reasoner(reasoner.address)).await;
    let reference = fixture("bo_train_0.jpg");
    let reference_two = fixture("bo_train_3.jpg");
    register(
        &app,
        "bo",
        "<bo> is a Shiba Inu; <Mam> is his friend and <lina> walks bo daily.",
        &[reference.clone(), reference_two.clone()],
    )
    .await;
    register(
        &app,
        "mam",
        "<mam> is a grey cat.",
        &[solid_png([128, 128, 128], 8, 8)],
    )
    .await;
    // Registered, not in the turn, and mentioned in `<bo>`'s description.
    register(
        &app,
        "lina",
        "<lina> is a friend.",
        &[solid_png([64, 64, 64], 8, 8)],
    )
    .await;
    *app.control.present_ids.lock().unwrap() = vec!["<bo>".into()];
    let query = fixture("bo_test_3.jpg");

    let response = app
        .client
        .post(app.url("/v1/ask"))
        .header("x-request-id", "turn-42")
        .json(&json!({
            "image": base64_of(&query),
            "question": "What is <Bo> doing next to <mam>? Is bo happy, and is MAM?",
            "concepts": ["bo", "mam"],
            "mode": "full",
            "pseudonymize": true,
            "batched_verification": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "turn-42");
    let body: Value = response.json().await.unwrap();

    let received = reasoner.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (headers, raw) = &received[0];
    assert_eq!(
        headers["x-request-id"], "turn-42",
        "the request id reaches the reasoner"
    );
    assert_eq!(headers["authorization"], "Bearer edge-key");
    // The reasoner is told how long this edge waits (SLC_REASONER_TIMEOUT_SECS, 10 s here).
    assert_eq!(headers[shared_types::DEADLINE_MS_HEADER], "9750");
    let text = String::from_utf8(raw.clone()).unwrap();
    // Privacy: no reference image in any encoding, no embedding, no real id.
    for reference_bytes in [&reference, &reference_two] {
        // A slice from the middle: JPEG headers are alike, the entropy-coded data is not.
        let encoded = base64_of(reference_bytes);
        let middle = &encoded[encoded.len() / 2..encoded.len() / 2 + 64];
        assert!(
            !text.contains(middle),
            "reference image bytes reached the cloud"
        );
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(reference_bytes));
        assert!(
            !text.contains(&hash),
            "reference image hash reached the cloud"
        );
    }
    assert!(!text.contains("embedding"), "{text}");
    let lowercase = text.to_ascii_lowercase();
    for real in ["<bo>", "<mam>", "<lina>"] {
        assert!(!lowercase.contains(real), "{real} leaked: {text}");
    }
    let sent: ReasonRequest = serde_json::from_slice(raw).unwrap();
    // No bracketed, case-varied or bare mention of a registered id in any text field (the raw
    // body's base64 image could hold `bo` between `+` and `/` by chance, so fields, not bytes).
    let mut fields = vec![sent.question.clone()];
    for concept in &sent.concepts {
        fields.push(concept.id.clone());
        fields.push(concept.description.clone());
    }
    for (id, cue) in sent.cues.iter().flatten() {
        fields.push(id.clone());
        fields.extend(cue.location_absolute.clone());
        fields.extend(cue.location_relative.clone());
    }
    for field in &fields {
        for real in ["bo", "mam", "lina"] {
            assert!(
                !mentions_word(field, real),
                "{real} reached the cloud in {field:?}"
            );
        }
    }
    assert_eq!(
        sent.question,
        "What is <c1> doing next to <c2>? Is <c1> happy, and is <c2>?"
    );
    assert_eq!(sent.concepts[0].id, "<c1>");
    assert_eq!(
        sent.concepts[0].description,
        "<c1> is a Shiba Inu; <c2> is his friend and <c3> walks <c1> daily."
    );
    assert_eq!(sent.concepts[1].id, "<c2>");
    assert_eq!(
        sent.concepts.len(),
        2,
        "only the turn's concepts are described"
    );
    assert_eq!(sent.mode, Mode::Full);
    assert!(sent.options.batched_verification);
    let cues = sent.cues.as_ref().unwrap();
    assert!(cues["<c1>"].present && !cues["<c2>"].present);
    // The query image crosses, re-encoded from its pixels (no metadata can go with it).
    let payload = sent
        .image
        .as_deref()
        .unwrap()
        .strip_prefix("data:image/jpeg;base64,")
        .unwrap();
    let crossed =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload).unwrap();
    let (crossed, original) = (
        image::load_from_memory(&crossed).unwrap(),
        image::load_from_memory(&query).unwrap(),
    );
    assert_eq!(
        (crossed.width(), crossed.height()),
        (original.width(), original.height())
    );

    // Everything comes back under the real names.
    assert_eq!(body["answer"], "<bo> is sleeping on the sofa.");
    assert_eq!(body["raw_cues"]["<bo>"]["present"], true);
    assert_eq!(
        body["detection"]["cues"]["<mam>"],
        json!({"present": false})
    );
    assert_eq!(
        body["reasoning"]["identities"]["<mam>"]["attributes"],
        "looks like <mam>"
    );
    assert_eq!(
        body["reasoning"]["verifications"][0]["question"],
        "Is <bo> in the center?"
    );
    assert_eq!(body["reasoning"]["actions"]["<bo>"], "kept");
    assert_eq!(body["reasoning"]["refined_cues"]["<bo>"]["present"], true);
    assert_eq!(body["reasoning"]["upstream"]["calls"], 3);
    assert!(
        body["timings"]["total_ms"].as_f64().unwrap()
            >= body["timings"]["reason_ms"].as_f64().unwrap()
    );
    app.stop().await;
}

/// Whether `text` mentions `word` in any case as a whole word (no id character either side).
fn mentions_word(text: &str, word: &str) -> bool {
    let is_id = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.split(|c: char| !is_id(c))
        .any(|piece| piece.eq_ignore_ascii_case(word))
}

#[tokio::test]
async fn text_only_and_no_detector_modes_skip_detection() {
    let reasoner = scripted_reasoner(Behaviour::Answer).await;
    let app = spawn_app(TestOptions::reasoner(reasoner.address)).await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    let image = base64_of(&solid_png([9, 9, 9], 4, 4));
    let cases = [
        json!({"question": "Is <bo> a cat?", "concepts": ["bo"]}),
        json!({"image": image, "question": "Is <bo> here?", "concepts": ["bo"], "mode": "no_detector"}),
        json!({"image": image, "question": "Is <bo> here?", "concepts": ["bo"], "mode": "pure"}),
    ];
    for case in &cases {
        let response = app
            .client
            .post(app.url("/v1/ask"))
            .json(case)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body.get("detection").is_none() && body.get("raw_cues").is_none());
        assert_eq!(
            body["answer"], "<bo> is sleeping on the sofa.",
            "no pseudonyms unless asked"
        );
    }
    assert!(app.control.seen().is_empty(), "the small model never ran");
    // no_reflection still detects, and says so to the reasoner.
    let response = app.post_json("/v1/ask", &json!({"image": image, "question": "Is <bo> here?", "concepts": ["bo"], "mode": "no_reflection"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.control.seen().len(), 1);
    let last: ReasonRequest =
        serde_json::from_slice(&reasoner.received.lock().unwrap().last().unwrap().1).unwrap();
    assert_eq!(last.mode, Mode::NoReflection);
    assert!(last.cues.is_some());
    let received = reasoner.received.lock().unwrap().clone();
    assert_eq!(received.len(), 4);
    let first: ReasonRequest = serde_json::from_slice(&received[0].1).unwrap();
    assert!(first.image.is_none() && first.cues.is_none());
    assert_eq!(first.concepts[0].id, "<bo>");
    let third: ReasonRequest = serde_json::from_slice(&received[2].1).unwrap();
    assert_eq!(third.mode, Mode::Pure);
    assert!(third.image.is_some() && third.cues.is_none());
    app.stop().await;
}

#[tokio::test]
async fn unreachable_reasoner_gives_502_with_the_local_detection() {
    let app = spawn_app(TestOptions::default()).await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    *app.control.present_ids.lock().unwrap() = vec!["<bo>".into()];
    let response = app.post_json("/v1/ask", &json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "question": "Where is <bo>?", "concepts": ["bo"]})).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unreachable");
    assert_eq!(body["error"]["message"], "the reasoner is unreachable");
    // The reasoner's address (the test config's http://127.0.0.1:9) stays in the edge's log.
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains(":9/") && !text.contains("/v1/reason"),
        "the reasoner's URL leaked: {text}"
    );
    assert_eq!(
        body["detection"]["cues"]["<bo>"]["location-absolute"],
        "center"
    );
    app.stop().await;
}

#[tokio::test]
async fn slow_reasoner_gives_504_and_failing_reasoner_502() {
    let slow = scripted_reasoner(Behaviour::Sleep(Duration::from_secs(5))).await;
    let address = slow.address;
    let app = spawn_app(TestOptions::tweak(move |config| {
        config.reasoner_url = format!("http://{address}");
        config.reasoner_timeout_secs = 0.5;
    }))
    .await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    let body = json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "question": "Where is <bo>?", "concepts": ["bo"]});
    let response = app.post_json("/v1/ask", &body).await;
    assert_eq!(response.status(), 504);
    let failure: Value = response.json().await.unwrap();
    assert_eq!(failure["error"]["type"], "upstream_timeout");
    assert_eq!(
        failure["detection"]["cues"]["<bo>"],
        json!({"present": false})
    );
    app.stop().await;

    let failing = scripted_reasoner(Behaviour::Fail).await;
    let app = spawn_app(TestOptions::reasoner(failing.address)).await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    let response = app.post_json("/v1/ask", &body).await;
    let message = assert_error(response, 502, "upstream_error").await;
    // The reasoner's status and error type are the client's; its message text is not.
    assert_eq!(message, "the reasoner failed (HTTP 500, upstream_error)");
    assert!(!message.contains("GPT-4o is down"), "{message}");
    let failing_address = failing.address.to_string();
    let response = app.post_json("/v1/ask", &body).await;
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("GPT-4o") && !text.contains(&failing_address),
        "internal text leaked: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn ask_streams_detection_then_answer() {
    let reasoner = scripted_reasoner(Behaviour::Answer).await;
    let app = spawn_app(TestOptions::reasoner(reasoner.address)).await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    let response = app.post_json("/v1/ask", &json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "question": "Where is <bo>?", "concepts": ["bo"], "stream": true})).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        [
            "detection",
            "verification",
            "delta",
            "delta",
            "delta",
            "delta",
            "delta",
            "delta",
            "done"
        ],
        "{text}"
    );
    // The deltas, joined, are the answer with the alias (split across two) revealed.
    let deltas: String = text
        .split("event: delta\ndata: ")
        .skip(1)
        .map(|rest| {
            let data: Value = serde_json::from_str(rest.lines().next().unwrap()).unwrap();
            data["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(deltas, "<bo> is sleeping on the sofa.");
    let sent: Value = serde_json::from_slice(&reasoner.received.lock().unwrap()[0].1).unwrap();
    assert_eq!(sent["stream"], true);
    let done = text
        .split("event: done\ndata: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let done: Value = serde_json::from_str(done).unwrap();
    assert_eq!(done["answer"], "<bo> is sleeping on the sofa.");
    app.stop().await;
}

/// A failed reasoner call ends the stream with an `error` event carrying the same body as the
/// non-streaming 502: the error and the local detection.
#[tokio::test]
async fn a_streamed_ask_ends_with_the_failure_body() {
    let failing = scripted_reasoner(Behaviour::Fail).await;
    let app = spawn_app(TestOptions::reasoner(failing.address)).await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    let mut body = json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "question": "Where is <bo>?", "concepts": ["bo"], "stream": true});
    let text = app.post_json("/v1/ask", &body).await.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(events, ["detection", "error"], "{text}");
    let streamed: Value = serde_json::from_str(
        text.split("event: error\ndata: ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap(),
    )
    .unwrap();
    body["stream"] = json!(false);
    let response = app.post_json("/v1/ask", &body).await;
    assert_eq!(response.status(), 502);
    let plain: Value = response.json().await.unwrap();
    assert_eq!(streamed["error"], plain["error"]);
    assert_eq!(streamed["error"]["type"], "upstream_error");
    assert!(!text.contains("GPT-4o is down"), "{text}");
    assert!(
        streamed["detection"]["cues"]["<bo>"].is_object(),
        "{streamed}"
    );
    app.stop().await;
}

/// A streaming client that leaves while the reasoner works cancels the reasoner call: the
/// reasoner sees its connection close (its handler is dropped) instead of the edge waiting
/// for an answer nobody will read.
#[tokio::test]
async fn a_client_that_leaves_a_streamed_ask_cancels_the_reasoner_call() {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct DroppedWhenCancelled(Arc<AtomicBool>);
    impl Drop for DroppedWhenCancelled {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (called, cancelled) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (called_flag, cancelled_flag) = (called.clone(), cancelled.clone());
    let router = Router::new().route(
        "/v1/reason",
        post(move || {
            let (called, cancelled) = (called_flag.clone(), cancelled_flag.clone());
            async move {
                called.store(true, Ordering::SeqCst);
                let _guard = DroppedWhenCancelled(cancelled);
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reasoner = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let app = spawn_app(TestOptions::tweak(move |config| {
        config.reasoner_url = format!("http://{reasoner}");
        config.reasoner_timeout_secs = 120.0;
    }))
    .await;
    register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 2, 3], 4, 4)]).await;
    let body = json!({"image": base64_of(&solid_png([9, 9, 9], 4, 4)), "question": "Where is <bo>?", "concepts": ["bo"], "stream": true});
    let mut response = app.post_json("/v1/ask", &body).await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: detection"));
    for _ in 0..500 {
        if called.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(called.load(Ordering::SeqCst), "the reasoner was called");
    drop(response);
    for _ in 0..500 {
        if cancelled.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the reasoner's handler was still running 5 s after the client left"
    );
    app.stop().await;
}

/// A 16×8 JPEG whose EXIF says "rotate 90° clockwise" (orientation 6) and carries a marker
/// string where GPS and camera details would be.
fn jpeg_with_exif(marker: &str) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::RgbImage::from_fn(16, 8, |x, _| image::Rgb([(x * 16) as u8, 40, 200]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let text = format!("{marker}\0");
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&2u16.to_le_bytes());
    // ImageDescription (ASCII) pointing past the IFD, then Orientation = 6.
    tiff.extend_from_slice(&0x010Eu16.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&(text.len() as u32).to_le_bytes());
    tiff.extend_from_slice(&38u32.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&[6, 0, 0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(text.as_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// What leaves the edge carries no metadata, and edge and cloud see the same orientation:
/// the photo is decoded with its EXIF rotation applied, and re-encoded without EXIF.
#[tokio::test]
async fn images_leave_the_edge_without_metadata_and_upright() {
    let reasoner = scripted_reasoner(Behaviour::Answer).await;
    let app = spawn_app(TestOptions::reasoner(reasoner.address)).await;
    let photo = jpeg_with_exif("GPS 48.8584N 2.2945E secret-marker");
    register(&app, "bo", "<bo> is a dog.", std::slice::from_ref(&photo)).await;
    let concept = app.get_json("/v1/concepts/bo").await;
    assert_eq!(
        (
            concept["images"][0]["width"].as_u64(),
            concept["images"][0]["height"].as_u64()
        ),
        (Some(8), Some(16)),
        "stored with the orientation applied: {concept}"
    );
    let response = app
        .post_json(
            "/v1/ask",
            &json!({"image": base64_of(&photo), "question": "Where is <bo>?", "concepts": ["bo"]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (_, body) = reasoner.received.lock().unwrap().last().cloned().unwrap();
    let sent: ReasonRequest = serde_json::from_slice(&body).unwrap();
    let url = sent.image.expect("the image went to the reasoner");
    let payload = url
        .strip_prefix("data:image/jpeg;base64,")
        .expect("a JPEG data URL");
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload).unwrap();
    assert!(
        !bytes.windows(4).any(|w| w == b"Exif"),
        "EXIF left the edge"
    );
    assert!(
        !bytes.windows(13).any(|w| w == b"secret-marker"),
        "metadata left the edge"
    );
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!(
        (decoded.width(), decoded.height()),
        (8, 16),
        "upright, as the edge saw it"
    );
    app.stop().await;
}

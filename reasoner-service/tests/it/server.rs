//! The accept loop (`src/server.rs`): bodies larger than the bounded read buffer, a head that
//! does not fit it, and shutdown that lets the turn in flight finish.

use std::time::{Duration, Instant};

use serde_json::json;
use slc_serve::READ_BUFFER_BYTES;

use crate::helpers::*;

const BO: &str = "<bo> is a cute golden retriever puppy with a playful expression.";
const IDENTITY: &str =
    r#"{"<bo>": {"category": "a golden retriever puppy", "attributes": "playful"}}"#;

#[tokio::test]
async fn a_body_many_times_the_read_buffer_arrives_whole() {
    let upstream = ScriptedUpstream::answering(
        &[("<bo>", "a golden retriever puppy", "playful")],
        |_| "yes yes".into(),
        "ok",
    )
    .await;
    let app = spawn_app(&upstream).await;
    // The fixture JPEG with a long trailer: several read buffers' worth of base64.
    let mut image = query_image_bytes();
    image.resize(image.len() + 4 * READ_BUFFER_BYTES, b'x');
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &image);
    assert!(encoded.len() > 5 * READ_BUFFER_BYTES);
    let (status, body) = app
        .post(
            "/v1/reason",
            &json!({
                "image": encoded,
                "question": "What is <bo> doing?",
                "concepts": [{"id": "<bo>", "description": BO}],
                "cues": {"<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = &upstream.requests_of("answer")[0];
    assert_eq!(
        answer.image_urls(),
        vec![format!("data:image/jpeg;base64,{encoded}")]
    );
}

#[tokio::test]
async fn a_request_head_larger_than_the_read_buffer_is_refused_with_431() {
    let upstream = ScriptedUpstream::start(|_, _| Reply::content(IDENTITY)).await;
    let app = spawn_app(&upstream).await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-padding", "p".repeat(READ_BUFFER_BYTES + 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);
    // The server goes on serving.
    let (status, _) = app.get_text("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_lets_the_turn_in_flight_finish_and_accepts_no_more() {
    let upstream = ScriptedUpstream::start(|_, _| {
        Reply::content(IDENTITY).delayed(Duration::from_millis(600))
    })
    .await;
    let app = spawn_app(&upstream).await;
    let client = app.client.clone();
    let url = app.url("/v1/identities");
    let turn = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"concepts": [{"id": "<bo>", "description": BO}]}))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    // Shut down only once the turn is waiting on the upstream.
    let waiting_since = Instant::now();
    while upstream.requests().is_empty() {
        assert!(waiting_since.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let address = app.address;
    app.stop().await;
    assert_eq!(turn.await.unwrap().unwrap(), 200);
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after shutdown"
    );
}

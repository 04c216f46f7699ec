//! Every client mistake gets a typed 4xx JSON error, never a 500, a panic or a hang.

use serde_json::json;

use crate::helpers::{
    TestApp, TestOptions, assert_error, base64_of, register, solid_png, spawn_app,
};

/// A PNG whose header announces `width` x `height` pixels but carries no pixel data: a
/// decompression bomb must be refused from the header alone.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // A valid, empty zlib stream: enough for a decoder to read the header and stop.
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

async fn app_with_bo() -> TestApp {
    let app = spawn_app(TestOptions::default()).await;
    register(
        &app,
        "bo",
        "<bo> is a dog.",
        &[solid_png([200, 100, 0], 8, 8)],
    )
    .await;
    app
}

async fn post_json(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    app.post_json(path, &body).await
}

#[tokio::test]
async fn bad_images_are_typed_errors() {
    let app = app_with_bo().await;
    let cases = [
        (
            "!!!not base64!!!".to_string(),
            422,
            "invalid_image",
            "base64",
        ),
        (
            base64_of(b"just some text, not an image"),
            422,
            "invalid_image",
            "not an image",
        ),
        (
            format!("data:text/plain;base64,{}", base64_of(b"x")),
            422,
            "invalid_image",
            "not an image",
        ),
        (
            "https://example.com/dog.jpg".to_string(),
            422,
            "invalid_image",
            "remote",
        ),
        (
            base64_of(&png_header_only(50_000, 50_000)),
            413,
            "image_too_large",
            "pixels",
        ),
        (String::new(), 422, "invalid_image", "empty"),
        // Under the pixel cap, but a CLIP resize of it would allocate gigabytes.
        (
            base64_of(&png_header_only(4_000_000, 1)),
            422,
            "invalid_image",
            "aspect ratio",
        ),
    ];
    for (image, status, kind, needle) in cases {
        let response = post_json(
            &app,
            "/v1/detect",
            json!({"image": image, "concepts": ["bo"]}),
        )
        .await;
        let message = assert_error(response, status, kind).await;
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    // The bomb is refused in registration too, and a truncated real image cannot decode.
    let mut truncated = solid_png([1, 2, 3], 64, 64);
    truncated.truncate(truncated.len() / 2);
    for image in [
        png_header_only(50_000, 50_000),
        png_header_only(1, 4_000_000),
        truncated,
    ] {
        let response = post_json(
            &app,
            "/v1/concepts",
            json!({"id": "x", "description": "x", "images": [base64_of(&image)]}),
        )
        .await;
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    assert!(
        app.control.seen().is_empty(),
        "no bad input reached the model"
    );
    // The ratio cap itself is accepted.
    register(&app, "thin", "<thin>", &[solid_png([1, 2, 3], 200, 1)]).await;
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = app_with_bo().await;
    let huge = "A".repeat(5 * 1024 * 1024);
    let response = post_json(
        &app,
        "/v1/detect",
        json!({"image": huge, "concepts": ["bo"]}),
    )
    .await;
    assert_error(response, 413, "payload_too_large").await;
    let form = reqwest::multipart::Form::new()
        .text("id", "big")
        .text("description", "big")
        .part(
            "images",
            reqwest::multipart::Part::bytes(vec![0u8; 5 * 1024 * 1024]),
        );
    let response = app
        .client
        .post(app.url("/v1/concepts"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "payload_too_large").await;
    app.stop().await;
}

#[tokio::test]
async fn concept_list_mistakes() {
    let app = app_with_bo().await;
    let image = base64_of(&solid_png([1, 1, 1], 4, 4));
    let message = assert_error(
        post_json(
            &app,
            "/v1/detect",
            json!({"image": image, "concepts": ["bo", "rex", "<zed>"]}),
        )
        .await,
        404,
        "unknown_concept",
    )
    .await;
    assert!(
        message.contains("<rex>") && message.contains("<zed>") && !message.contains("<bo>"),
        "{message}"
    );
    assert_error(
        post_json(
            &app,
            "/v1/detect",
            json!({"image": image, "concepts": ["a", "b", "c", "d", "e"]}),
        )
        .await,
        413,
        "too_many_concepts",
    )
    .await;
    assert_error(
        post_json(&app, "/v1/detect", json!({"image": image, "concepts": []})).await,
        422,
        "invalid_request",
    )
    .await;
    assert_error(
        post_json(
            &app,
            "/v1/detect",
            json!({"image": image, "concepts": ["bo", "<bo>"]}),
        )
        .await,
        422,
        "invalid_request",
    )
    .await;
    assert_error(
        post_json(
            &app,
            "/v1/detect",
            json!({"image": image, "concepts": ["no spaces"]}),
        )
        .await,
        422,
        "invalid_concept_id",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn registration_mistakes() {
    let app = spawn_app(TestOptions::default()).await;
    let image = base64_of(&solid_png([1, 1, 1], 4, 4));
    let cases = [
        (
            json!({"id": "", "description": "d", "images": [image]}),
            422,
            "invalid_concept_id",
        ),
        (
            json!({"id": "a/b", "description": "d", "images": [image]}),
            422,
            "invalid_concept_id",
        ),
        (
            json!({"id": "x".repeat(65), "description": "d", "images": [image]}),
            422,
            "invalid_concept_id",
        ),
        (
            json!({"id": "ok", "description": "   ", "images": [image]}),
            422,
            "invalid_request",
        ),
        (
            json!({"id": "ok", "description": "d", "images": []}),
            422,
            "invalid_request",
        ),
        (
            json!({"id": "ok", "description": "d", "images": [image, image, image, image]}),
            413,
            "too_many_images",
        ),
        (
            json!({"id": "ok", "description": "d", "images": [image], "embedding": [1.0]}),
            422,
            "invalid_request",
        ),
        (json!({"id": "ok"}), 422, "invalid_request"),
    ];
    for (body, status, kind) in cases {
        assert_error(post_json(&app, "/v1/concepts", body).await, status, kind).await;
    }
    assert_eq!(app.state.registry.row_counts().await.unwrap(), (0, 0));
    app.stop().await;
}

#[tokio::test]
async fn wrong_content_types_and_malformed_bodies() {
    let app = app_with_bo().await;
    for path in [
        "/v1/detect",
        "/v1/concepts",
        "/v1/ask",
        "/v1/chat/completions",
    ] {
        let response = app
            .client
            .post(app.url(path))
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_error(response, 415, "unsupported_media_type").await;
    }
    let response = app
        .client
        .post(app.url("/v1/detect"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_json").await;
    assert_error(
        app.client.get(app.url("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.client
            .get(app.url("/v1/concepts/bo/images/first"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_path",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn empty_question_is_refused() {
    let app = app_with_bo().await;
    for question in ["", "   \n"] {
        assert_error(
            post_json(
                &app,
                "/v1/ask",
                json!({"question": question, "concepts": ["bo"]}),
            )
            .await,
            422,
            "invalid_request",
        )
        .await;
    }
    assert_error(
        post_json(
            &app,
            "/v1/ask",
            json!({"question": "Who is <rex>?", "concepts": ["rex"]}),
        )
        .await,
        404,
        "unknown_concept",
    )
    .await;
    app.stop().await;
}

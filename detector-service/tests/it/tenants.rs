//! Tenants over HTTP: keys → tenants (env and a reloaded keys file), operator keys, per-tenant
//! quotas and the request budget (the export/delete round trip is in `tenant_data.rs`).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, assert_error, base64_of, solid_png, spawn_app};

pub const ALICE: &str = "alice-key-0123456789";
pub const BOB: &str = "bob-key-0123456789";
pub const OPERATOR: &str = "operator-key-0123456789";

/// Two tenants and an operator, with `tweak` on top.
pub fn two_tenants(
    database_url: Option<String>,
    tweak: impl FnOnce(&mut slc_detector::config::ServeConfig) + Send + 'static,
) -> TestOptions {
    TestOptions {
        database_url,
        ..TestOptions::tweak(move |config| {
            config.api_keys = vec![format!("alice:{ALICE}"), format!("bob:{BOB}")];
            config.admin_keys = vec![OPERATOR.into()];
            tweak(config);
        })
    }
}

/// One request with `key`, the body as JSON when given.
pub async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut builder = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        builder = builder.json(body);
    }
    builder.send().await.unwrap()
}

/// Registers `id` for the tenant of `key`.
pub async fn register_as(app: &TestApp, key: &str, id: &str, description: &str, image: &[u8]) {
    let body = json!({"id": id, "description": description, "images": [base64_of(image)]});
    let response = call(app, key, Method::POST, "/v1/concepts", Some(&body)).await;
    let status = response.status();
    assert_eq!(status, 201, "{id}: {}", response.text().await.unwrap());
}

/// A PNG of random noise: it does not compress, so its size is about 3 bytes a pixel.
pub fn noise_png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let image = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// Extracts a tar archive with the system's `tar` into a fresh directory.
pub fn untar(bytes: &[u8]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("export.tar");
    std::fs::write(&path, bytes).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&path)
        .arg("-C")
        .arg(directory.path())
        .status()
        .unwrap();
    assert!(status.success());
    directory
}

#[tokio::test]
async fn keys_name_tenants_and_operators_manage_them_without_reading_photos() {
    let app = spawn_app(two_tenants(None, |_| {})).await;
    register_as(
        &app,
        ALICE,
        "bo",
        "<bo> is alice's dog.",
        &solid_png([1, 2, 3], 4, 4),
    )
    .await;
    register_as(
        &app,
        BOB,
        "bo",
        "<bo> is bob's bird.",
        &solid_png([9, 8, 7], 4, 4),
    )
    .await;
    let alice: Value = call(&app, ALICE, Method::GET, "/v1/concepts/bo", None)
        .await
        .json()
        .await
        .unwrap();
    let bob: Value = call(&app, BOB, Method::GET, "/v1/concepts/bo", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alice["description"], "<bo> is alice's dog.");
    assert_eq!(bob["description"], "<bo> is bob's bird.");
    let unauthenticated = app
        .client
        .get(app.url("/v1/concepts"))
        .send()
        .await
        .unwrap();
    assert_error(unauthenticated, 401, "unauthorized").await;
    assert_error(
        call(&app, "alice", Method::GET, "/v1/concepts", None).await,
        401,
        "unauthorized",
    )
    .await;

    // The operator manages tenants but owns no concepts and reads no photos.
    let tenants: Value = call(&app, OPERATOR, Method::GET, "/v1/tenants", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tenants["tenants"][0]["tenant"], "alice");
    assert_eq!(tenants["tenants"][1]["concepts"], 1);
    for path in [
        "/v1/concepts",
        "/v1/concepts/bo",
        "/v1/concepts/bo/images/0",
        "/v1/export",
    ] {
        assert_error(
            call(&app, OPERATOR, Method::GET, path, None).await,
            403,
            "forbidden",
        )
        .await;
    }
    assert_error(
        call(
            &app,
            OPERATOR,
            Method::GET,
            "/v1/tenants/alice/export",
            None,
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // Tenants do not manage tenants.
    assert_error(
        call(&app, ALICE, Method::GET, "/v1/tenants", None).await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        call(&app, ALICE, Method::DELETE, "/v1/tenants/bob", None).await,
        403,
        "forbidden",
    )
    .await;
    // Metrics: the operator's key reads them; without one they are closed.
    assert_eq!(
        call(&app, OPERATOR, Method::GET, "/metrics", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let metrics = call(&app, OPERATOR, Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("alice"), "no tenant label by default");
    app.stop().await;
}

#[tokio::test]
async fn an_operator_reads_a_tenants_photos_only_with_the_flag_and_tenant_labels_on_request() {
    let app = spawn_app(two_tenants(None, |config| {
        config.operator_reads_photos = true;
        config.metrics_tenant_labels = true;
    }))
    .await;
    let photo = solid_png([5, 6, 7], 4, 4);
    register_as(&app, ALICE, "bo", "<bo> is alice's dog.", &photo).await;
    let response = call(
        &app,
        OPERATOR,
        Method::GET,
        "/v1/tenants/alice/export",
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let extracted = untar(&response.bytes().await.unwrap());
    assert_eq!(
        std::fs::read(extracted.path().join("concepts/bo/0.png")).unwrap(),
        photo
    );
    let metrics = call(&app, OPERATOR, Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("slc_detector_tenant_requests_total{status=\"201\",tenant=\"alice\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn per_tenant_concept_and_storage_quotas_refuse_with_413() {
    let app = spawn_app(two_tenants(None, |config| {
        config.tenant_max_concepts = 2;
        config.tenant_max_stored_mib = 1;
        config.max_body_bytes = 4 * 1024 * 1024;
    }))
    .await;
    let small = solid_png([1, 1, 1], 4, 4);
    register_as(&app, ALICE, "a1", "<a1> one.", &small).await;
    register_as(&app, ALICE, "a2", "<a2> two.", &small).await;
    let third = json!({"id": "a3", "description": "<a3>.", "images": [base64_of(&small)]});
    let message = assert_error(
        call(&app, ALICE, Method::POST, "/v1/concepts", Some(&third)).await,
        413,
        "concept_quota_exceeded",
    )
    .await;
    assert!(message.contains("2 concepts"), "{message}");
    // Bob's quota is his own.
    register_as(&app, BOB, "a3", "<a3>.", &small).await;
    // 1 MiB of photos per tenant: a 700×700 noise PNG (about 1.4 MiB) is over it.
    let large = noise_png(700, 700, 7);
    assert!(large.len() > 1024 * 1024);
    let body = json!({"id": "big", "description": "<big>.", "images": [base64_of(&large)]});
    assert_error(
        call(&app, BOB, Method::POST, "/v1/concepts", Some(&body)).await,
        413,
        "storage_quota_exceeded",
    )
    .await;
    let replace = json!({"description": "<a1> one.", "images": [base64_of(&large)]});
    assert_error(
        call(&app, ALICE, Method::PUT, "/v1/concepts/a1", Some(&replace)).await,
        413,
        "storage_quota_exceeded",
    )
    .await;
    assert_eq!(app.state.registry.row_counts().await.unwrap(), (3, 3));
    app.stop().await;
}

#[tokio::test]
async fn per_tenant_conversation_quota_refuses_with_413() {
    let app = spawn_app(two_tenants(None, |config| {
        config.tenant_max_conversations = 2
    }))
    .await;
    let create = |key| call(&app, key, Method::POST, "/v1/conversations", None);
    for _ in 0..2 {
        assert_eq!(create(ALICE).await.status(), 201);
    }
    let message = assert_error(create(ALICE).await, 413, "conversation_quota_exceeded").await;
    assert!(message.contains("2 conversations"), "{message}");
    // Bob's quota is his own.
    assert_eq!(create(BOB).await.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn each_tenant_has_a_request_budget_and_429_says_when_to_retry() {
    let app = spawn_app(two_tenants(None, |config| {
        config.tenant_requests_per_minute = 3
    }))
    .await;
    for _ in 0..3 {
        assert_eq!(
            call(&app, ALICE, Method::GET, "/v1/concepts", None)
                .await
                .status(),
            200
        );
    }
    let refused = call(&app, ALICE, Method::GET, "/v1/concepts", None).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_error(refused, 429, "rate_limited").await;
    assert_eq!(
        call(&app, BOB, Method::GET, "/v1/concepts", None)
            .await
            .status(),
        200
    );
    // Probes are not counted.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;

    // Keyless mode: the one local user is not limited.
    let local = spawn_app(TestOptions::tweak(|config| {
        config.tenant_requests_per_minute = 1
    }))
    .await;
    for _ in 0..3 {
        assert_eq!(
            local
                .client
                .get(local.url("/v1/concepts"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    local.stop().await;
}

#[tokio::test]
async fn the_keys_file_holds_hashes_and_is_reloaded_without_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("keys");
    let line = |tenant: &str, key: &str| slc_detector::tenants::keys::keys_file_line(tenant, key);
    std::fs::write(&path, format!("{}\n", line("carol", "carol-key-1"))).unwrap();
    let file = path.clone();
    let app = spawn_app(TestOptions::tweak(move |config| {
        config.keys_file = Some(file)
    }))
    .await;
    assert_eq!(
        call(&app, "carol-key-1", Method::GET, "/v1/concepts", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        call(&app, "carol-key-2", Method::GET, "/v1/concepts", None)
            .await
            .status(),
        401
    );
    // Rotate carol's key: the new file is picked up within the watch interval.
    std::fs::write(
        &path,
        format!("# rotated\n{}\n", line("carol", "carol-key-2")),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let new = call(&app, "carol-key-2", Method::GET, "/v1/concepts", None)
            .await
            .status();
        if new == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the keys file was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        call(&app, "carol-key-1", Method::GET, "/v1/concepts", None)
            .await
            .status(),
        401
    );
    app.stop().await;
}

//! The concept registry over HTTP, on SQLite and PostgreSQL.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use slc_detector::registry::RegistryOptions;

use crate::helpers::{
    TestOptions, assert_error, base64_of, data_url, fixture, fresh_postgres_schema, postgres_url,
    register, solid_png, spawn_app, spawn_app_with_registry_options,
};

async fn concept_lifecycle(options: TestOptions) {
    let app = spawn_app(options).await;
    let photo_a = fixture("bo_train_0.jpg");
    let photo_b = fixture("bo_train_3.jpg");
    let response = app
        .post_json(
            "/v1/concepts",
            &json!({
                "id": "<bo>",
                "description": "  <bo> is a Shiba Inu with a black collar. ",
                "images": [data_url(&photo_a, "image/jpeg"), base64_of(&photo_b)],
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/v1/concepts/bo");
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["id"], "bo");
    assert_eq!(
        created["description"],
        "<bo> is a Shiba Inu with a black collar."
    );
    assert_eq!(created["images"][0]["content_type"], "image/jpeg");
    assert_eq!(
        created["images"][1]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&photo_b))
    );
    assert!(
        created.get("embedding").is_none(),
        "embeddings never leave the edge"
    );
    assert_eq!(*app.control.embedded_images.lock().unwrap(), 2);

    // The stored image comes back byte for byte.
    let image = app
        .client
        .get(app.url("/v1/concepts/bo/images/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/jpeg");
    assert_eq!(image.bytes().await.unwrap().to_vec(), photo_b);
    assert_error(
        app.client
            .get(app.url("/v1/concepts/bo/images/2"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    // Multipart registration with file parts.
    let form = Form::new()
        .text("id", "mam")
        .text("description", "<mam> is a grey tabby cat.")
        .part(
            "images",
            Part::bytes(solid_png([120, 120, 120], 8, 8)).file_name("a.png"),
        )
        .part(
            "images",
            Part::bytes(solid_png([90, 90, 90], 8, 8)).file_name("b.png"),
        );
    let response = app
        .client
        .post(app.url("/v1/concepts"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    let listed: Value = app.get_json("/v1/concepts").await;
    let ids: Vec<&str> = listed["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bo", "mam"]);

    let one: Value = app.get_json("/v1/concepts/mam").await;
    assert_eq!(one["images"].as_array().unwrap().len(), 2);

    // Duplicate id → 409.
    let duplicate = app
        .post_json(
            "/v1/concepts",
            &json!({"id": "bo", "description": "x", "images": [base64_of(&photo_a)]}),
        )
        .await;
    assert_error(duplicate, 409, "concept_exists").await;

    // PUT replaces the description, then the images.
    let updated: Value = app
        .client
        .put(app.url("/v1/concepts/bo"))
        .json(&json!({"description": "<bo> sleeps a lot."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["description"], "<bo> sleeps a lot.");
    assert_eq!(updated["images"].as_array().unwrap().len(), 2);
    let replaced: Value = app
        .client
        .put(app.url("/v1/concepts/bo"))
        .json(&json!({"description": "<bo> sleeps.", "images": [base64_of(&photo_a)]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replaced["images"].as_array().unwrap().len(), 1);
    assert_error(
        app.client
            .put(app.url("/v1/concepts/rex"))
            .json(&json!({"description": "x"}))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_concept",
    )
    .await;

    let deleted = app
        .client
        .delete(app.url("/v1/concepts/bo"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(
        app.client
            .get(app.url("/v1/concepts/bo"))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_concept",
    )
    .await;
    assert_error(
        app.client
            .delete(app.url("/v1/concepts/bo"))
            .send()
            .await
            .unwrap(),
        404,
        "unknown_concept",
    )
    .await;
    assert_eq!(app.state.registry.row_counts().await.unwrap(), (1, 2));
    app.stop().await;
}

#[tokio::test]
async fn concepts_lifecycle_on_sqlite() {
    concept_lifecycle(TestOptions::default()).await;
}

#[tokio::test]
async fn concepts_lifecycle_on_postgres() {
    let Some(base) = postgres_url() else { return };
    let url = fresh_postgres_schema(&base).await;
    concept_lifecycle(TestOptions {
        database_url: Some(url),
        ..TestOptions::default()
    })
    .await;
}

/// A bad third image fails the whole registration before anything is written.
async fn bad_third_image_leaves_nothing(options: TestOptions) {
    let app = spawn_app(options).await;
    let good = solid_png([10, 200, 10], 6, 6);
    let response = app.post_json("/v1/concepts", &json!({
            "id": "bo",
            "description": "<bo> is a dog.",
            "images": [base64_of(&good), base64_of(&good), base64_of(b"definitely not an image")],
        })).await;
    let message = assert_error(response, 422, "invalid_image").await;
    assert!(message.contains("images[2]"), "{message}");
    assert_eq!(app.state.registry.row_counts().await.unwrap(), (0, 0));
    assert_eq!(
        *app.control.embedded_images.lock().unwrap(),
        0,
        "nothing embedded either"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_third_image_leaves_no_partial_concept_on_sqlite() {
    bad_third_image_leaves_nothing(TestOptions::default()).await;
}

#[tokio::test]
async fn bad_third_image_leaves_no_partial_concept_on_postgres() {
    let Some(base) = postgres_url() else { return };
    bad_third_image_leaves_nothing(TestOptions {
        database_url: Some(fresh_postgres_schema(&base).await),
        ..TestOptions::default()
    })
    .await;
}

#[tokio::test]
async fn racing_registrations_of_one_id_leave_one_concept() {
    let app = spawn_app(TestOptions::default()).await;
    let body = json!({"id": "bo", "description": "<bo>", "images": [base64_of(&solid_png([1, 2, 3], 4, 4))]});
    let (a, b) = tokio::join!(
        app.client.post(app.url("/v1/concepts")).json(&body).send(),
        app.client.post(app.url("/v1/concepts")).json(&body).send(),
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert_eq!(app.state.registry.row_counts().await.unwrap(), (1, 1));
    register(&app, "mam", "<mam>", &[solid_png([5, 5, 5], 4, 4)]).await;
    app.stop().await;
}

/// A registration that meets another connection's write lock past the busy timeout gets a 503
/// `database_unavailable` with `Retry-After` and a fixed message (not sqlx's "database is
/// locked"), and the service is ready and writable again once the lock goes.
#[tokio::test]
async fn a_locked_sqlite_file_is_a_503_with_retry_after() {
    use sqlx::Connection as _;
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("locked.db").display()
    );
    let app = spawn_app_with_registry_options(
        TestOptions {
            database_url: Some(url.clone()),
            ..TestOptions::default()
        },
        RegistryOptions {
            sqlite_busy_timeout: std::time::Duration::from_millis(200),
            ..RegistryOptions::default()
        },
    )
    .await;
    let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let concept = |id: &str| json!({"id": id, "description": format!("<{id}> is a dog."), "images": [base64_of(&solid_png([1, 2, 3], 4, 4))]});

    let started = std::time::Instant::now();
    let response = app.post_json("/v1/concepts", &concept("bo")).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200),
        "the busy timeout was waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "database_unavailable", "{text}");
    let lowercase = text.to_ascii_lowercase();
    for internal in ["locked", "busy", "code:", "sqlite", "(code"] {
        assert!(
            !lowercase.contains(internal),
            "{internal:?} reached the client: {text}"
        );
    }
    // Reads go on under the lock (WAL), so readiness holds, and nothing was half-written.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(app.get_json("/v1/concepts").await["concepts"], json!([]));

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let response = app.post_json("/v1/concepts", &concept("bo")).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    app.stop().await;
}

/// The registry's quotas hold before any embedding or write: one concept more than
/// `SLC_MAX_CONCEPTS` is 413, and so are photos that would pass `SLC_MAX_STORED_MIB`; a
/// replacement's old photos do not count against it.
#[tokio::test]
async fn the_registrys_quotas_are_enforced_before_any_work() {
    let app = spawn_app(TestOptions::tweak(|config| {
        config.max_concepts = 2;
        config.max_stored_mib = 1;
    }))
    .await;
    let small = solid_png([1, 2, 3], 4, 4);
    register(&app, "a", "<a>", std::slice::from_ref(&small)).await;
    register(&app, "b", "<b>", std::slice::from_ref(&small)).await;
    let body = json!({"id": "c", "description": "<c>", "images": [base64_of(&small)]});
    let message = assert_error(
        app.post_json("/v1/concepts", &body).await,
        413,
        "concept_quota_exceeded",
    )
    .await;
    assert!(message.contains("2 concepts"), "{message}");
    // Noise does not compress: a 700x700 PNG of it is over 1 MiB.
    let noisy = image::RgbImage::from_fn(700, 700, |x, y| {
        image::Rgb([(x * 31 + y * 17) as u8, (x * y) as u8, (x ^ y) as u8])
    });
    let mut big = Vec::new();
    noisy
        .write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Png)
        .unwrap();
    assert!(big.len() > 1024 * 1024, "{} bytes", big.len());
    let embedded_before = *app.control.embedded_images.lock().unwrap();
    let replace = json!({"description": "<a>", "images": [base64_of(&big)]});
    let response = app
        .client
        .put(app.url("/v1/concepts/a"))
        .json(&replace)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "storage_quota_exceeded").await;
    assert_eq!(
        *app.control.embedded_images.lock().unwrap(),
        embedded_before,
        "nothing embedded"
    );
    // Replacing a concept's photo with one of the same size fits: the old one does not count.
    let replace = json!({"description": "<a>", "images": [base64_of(&small)]});
    let response = app
        .client
        .put(app.url("/v1/concepts/a"))
        .json(&replace)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

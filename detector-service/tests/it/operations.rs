//! Probes, auth, the OpenAPI document (with its drift check) and the CLI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::doubles::DoubleControl;
use crate::helpers::{TestOptions, assert_error, spawn_app};

#[test]
fn committed_openapi_matches_the_code() {
    let committed_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/detector.json");
    let generated = slc_detector::openapi::openapi_json();
    if std::env::var("SLC_UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/detector.json is out of date; regenerate with \
         `cargo run -p slc-detector -- openapi > openapi/detector.json` \
         (or SLC_UPDATE_OPENAPI=1 cargo test -p slc-detector committed_openapi)"
    );
    let document: Value = serde_json::from_str(&generated).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/concepts",
        "/v1/concepts/{id}",
        "/v1/concepts/{id}/images/{n}",
        "/v1/detect",
        "/v1/ask",
        "/v1/chat/completions",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
    assert!(
        document["paths"]["/v1/detect"]["post"]["requestBody"]["content"]["application/json"]["example"]
            .is_object()
    );
}

#[test]
fn the_cli_prints_the_same_document() {
    let output = Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        slc_detector::openapi::openapi_json()
    );
}

#[tokio::test]
async fn openapi_and_offline_docs_are_served() {
    let app = spawn_app(TestOptions::default()).await;
    let served: Value = app.get_json("/openapi.json").await;
    let generated: Value = serde_json::from_str(&slc_detector::openapi::openapi_json()).unwrap();
    assert_eq!(served, generated);
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger-ui"));
    // The UI's assets are vendored into the binary, not fetched from a CDN.
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn bearer_keys_guard_the_api_but_not_the_probes() {
    let app = spawn_app(TestOptions::tweak(|config| {
        config.api_keys = vec!["key-one".into(), "key-two".into()];
    }))
    .await;
    assert_error(
        app.client
            .get(app.url("/v1/concepts"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let wrong = app
        .client
        .get(app.url("/v1/concepts"))
        .bearer_auth("key-three")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    assert_error(wrong, 401, "unauthorized").await;
    let prefix = app
        .client
        .get(app.url("/v1/concepts"))
        .bearer_auth("key-on")
        .send()
        .await
        .unwrap();
    assert_eq!(prefix.status(), 401);
    for key in ["key-one", "key-two"] {
        let ok = app
            .client
            .get(app.url("/v1/concepts"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    for probe in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            app.client
                .get(app.url(probe))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{probe}"
        );
    }
    assert!(slc_detector::middleware::key_is_accepted(
        b"a",
        &["b".into(), "a".into()]
    ));
    assert!(!slc_detector::middleware::key_is_accepted(
        b"",
        &["a".into()]
    ));
    app.stop().await;
}

#[tokio::test]
async fn readiness_follows_model_loading() {
    let control = DoubleControl::default();
    *control.fail_load.lock().unwrap() = Some("no weights in /nowhere".into());
    let app = spawn_app(TestOptions {
        control,
        wait_ready: false,
        ..TestOptions::default()
    })
    .await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut body = Value::Null;
    for _ in 0..100 {
        let response = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        body = response.json().await.unwrap();
        if body["reason"].as_str().unwrap().contains("failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no weights in /nowhere"),
        "{body}"
    );
    let response = app
        .post_json("/v1/detect", &json!({"image": "", "concepts": ["bo"]}))
        .await;
    assert_eq!(response.status(), 404, "validation still answers first");
    assert_error(
        app.client.get(app.url("/v1/models")).send().await.unwrap(),
        503,
        "model_unavailable",
    )
    .await;
    app.stop().await;

    let ready = spawn_app(TestOptions::default()).await;
    let response = ready.client.get(ready.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    ready.stop().await;
}

/// A model job that panics (tch does on a libtorch error) fails only its own request with a
/// typed 500: the worker reloads its models and serves the next request, and readiness holds.
#[tokio::test]
async fn a_panicking_model_job_fails_one_request_and_the_worker_serves_on() {
    let control = DoubleControl::default();
    let app = spawn_app(TestOptions {
        control: control.clone(),
        ..TestOptions::default()
    })
    .await;
    let chat = json!({"model": crate::doubles::BASE_MODEL, "messages": [{"role": "user", "content": "hi"}]});
    *control.panics.lock().unwrap() = 1;
    let message = assert_error(
        app.post_json("/v1/chat/completions", &chat).await,
        500,
        "model_error",
    )
    .await;
    assert!(
        message.contains("the model failed") && !message.contains("CUDA"),
        "the engine's own text stays in the log: {message}"
    );
    let served = app.post_json("/v1/chat/completions", &chat).await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        *control.loads.lock().unwrap(),
        2,
        "loaded at start and after the panic"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("slc_detector_model_panics_total 1"),
        "{metrics}"
    );

    // A panic that a reload cannot recover from turns readiness 503 with the reason.
    *control.panics.lock().unwrap() = 1;
    *control.fail_load.lock().unwrap() = Some("the GPU is gone".into());
    assert_error(
        app.post_json("/v1/chat/completions", &chat).await,
        500,
        "model_error",
    )
    .await;
    let mut reason = Value::Null;
    for _ in 0..200 {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            reason = ready.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        reason["reason"]
            .as_str()
            .unwrap_or("")
            .contains("the GPU is gone"),
        "{reason}"
    );
    assert_error(
        app.post_json("/v1/chat/completions", &chat).await,
        503,
        "model_unavailable",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = spawn_app(TestOptions::default()).await;
    crate::helpers::register(
        &app,
        "bo",
        "<bo>",
        &[crate::helpers::solid_png([1, 2, 3], 4, 4)],
    )
    .await;
    app.control.close_gate();
    let request = app
        .client
        .post(app.url("/v1/detect"))
        .json(&json!({"image": crate::helpers::base64_of(&crate::helpers::solid_png([9, 9, 9], 4, 4)), "concepts": ["bo"]}))
        .send();
    let in_flight = tokio::spawn(request);
    while app.control.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let control = app.control.clone();
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the in-flight request"
    );
    control.open_gate();
    assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
    stopping.await.unwrap();
}

#[test]
fn every_flag_has_an_env_var() {
    use clap::CommandFactory;
    let command = slc_detector::config::Cli::command();
    let serve = command.find_subcommand("serve").unwrap();
    for argument in serve.get_arguments() {
        if matches!(argument.get_id().as_str(), "help" | "version") {
            continue;
        }
        assert!(
            argument.get_env().is_some(),
            "--{} has no env var",
            argument.get_id()
        );
    }
}

/// The real binary: `serve` configured only through env vars, answering probes and the
/// registry while its model cannot load (readiness names the missing directory), and exiting
/// cleanly on SIGTERM.
#[tokio::test]
async fn the_binary_serves_from_env_and_stops_on_sigterm() {
    let directory = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let log = directory.path().join("edge.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("serve")
        .env("SLC_BIND", format!("127.0.0.1:{port}"))
        .env(
            "SLC_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                directory.path().join("edge.db").display()
            ),
        )
        .env("SLC_MODEL_DIR", "/nonexistent/model")
        .env(
            "SLC_CLIP_DIR",
            crate::helpers::engine_fixtures().join("clip/tiny-clip"),
        )
        .env("SLC_API_KEYS", "k1,k2")
        .env("SLC_QUEUE_SIZE", "4")
        .env("SLC_LOG_JSON", "true")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let client = crate::helpers::http_client();
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::wait_healthy(&client, &base, &mut child, &log).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let reason: Value = ready.json().await.unwrap();
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/model"),
        "{reason}"
    );
    // A probe while the model is not ready is not an error of the service.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.lines().any(|line| line.contains("ERROR")
            && (line.contains("/readyz") || line.contains("response failed"))),
        "{log_text}"
    );
    assert_eq!(
        client
            .get(format!("{base}/v1/concepts"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let listed = client
        .get(format!("{base}/v1/concepts"))
        .bearer_auth("k2")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(directory.path().join("edge.db").exists());

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut exit = None;
    for _ in 0..400 {
        exit = child.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let Some(status) = exit else {
        child.kill().unwrap();
        panic!("the binary did not stop on SIGTERM");
    };
    assert!(status.success(), "{status}");
}

/// Workers load one after another: with three, never two loads at once (each would hold a
/// whole checkpoint's loading memory on the host), and the service is ready once all three are.
#[tokio::test]
async fn workers_load_their_models_one_after_another() {
    let control = DoubleControl::default();
    let app = spawn_app(TestOptions {
        control: control.clone(),
        tweak: Box::new(|config| config.workers = Some(3)),
        ..TestOptions::default()
    })
    .await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(*control.loads.lock().unwrap(), 3);
    assert_eq!(
        control.loads_at_once.lock().unwrap().1,
        1,
        "two workers loaded at once"
    );
}

//! The real `slc-reasoner` binary: `openapi` prints the committed document, `serve` comes up
//! from environment variables alone and answers on loopback.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn the_openapi_subcommand_prints_the_committed_document() {
    let output = Command::new(env!("CARGO_BIN_EXE_slc-reasoner"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/reasoner.json"),
    )
    .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), committed);
}

#[tokio::test]
async fn serve_is_configured_by_environment_variables() {
    let upstream = ScriptedUpstream::answering(
        &[("<bo>", "a golden retriever puppy", "playful")],
        |_| "yes yes".into(),
        "ok",
    )
    .await;
    let served = ServedBinary::start(&[
        ("SLC_LLM_BASE_URL", upstream.base_url()),
        ("SLC_LLM_MODEL", "env-vlm".into()),
        ("SLC_LLM_API_KEY", "env-upstream-key".into()),
        ("SLC_REASONER_API_KEYS", "edge-a,edge-b".into()),
    ])
    .await;
    let client = test_client();
    let base = &served.base;
    let request =
        serde_json::json!({"concepts": [{"id": "<bo>", "description": "<bo> is a puppy."}]});
    let refused = client
        .post(format!("{base}/v1/identities"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let response = client
        .post(format!("{base}/v1/identities"))
        .bearer_auth("edge-b")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["upstream"]["model"], "env-vlm");
    let sent = &upstream.requests()[0];
    assert_eq!(sent.body["model"], "env-vlm");
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer env-upstream-key")
    );
}

/// The log lines of a turn carry its request id: the real binary's own subscriber, read from
/// its output, so no other test's subscriber can race with it (as a scoped one in this test
/// binary did through tracing's interest cache).
#[tokio::test]
async fn log_lines_of_a_turn_carry_its_request_id() {
    let upstream = ScriptedUpstream::start(|_, index| match index {
        0 => Reply::status(429).retry_after("0"),
        _ => Reply::content(r#"{"<bo>": {"category": "a puppy", "attributes": "playful"}}"#),
    })
    .await;
    let served = ServedBinary::start(&[
        ("SLC_LLM_BASE_URL", upstream.base_url()),
        ("SLC_LOG_JSON", "true".into()),
        ("RUST_LOG", "info".into()),
    ])
    .await;
    let request =
        serde_json::json!({"concepts": [{"id": "<bo>", "description": "<bo> is a puppy."}]});
    let response = test_client()
        .post(format!("{}/v1/identities", served.base))
        .header(shared_types::REQUEST_ID_HEADER, "edge-turn-trace-9")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // The line is written before the retry's response; the file may lag the socket a little.
    let mut retry_line = None;
    for _ in 0..100 {
        let text = served.log_text();
        retry_line = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["fields"]["message"] == "retrying upstream call");
        if retry_line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retry_line =
        retry_line.unwrap_or_else(|| panic!("no retry logged:\n{}", served.log_tail(40)));
    let spans = retry_line["spans"].as_array().cloned().unwrap_or_default();
    assert!(
        spans
            .iter()
            .any(|span| span["request_id"] == "edge-turn-trace-9"),
        "{retry_line}"
    );
}

/// An address other machines can reach, and no client keys: the binary refuses to start and
/// says why, unless told to accept it. Nothing is bound, so no port is opened.
#[test]
fn an_open_bind_without_keys_is_refused_at_start() {
    let directory = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_slc-reasoner"))
        .arg("serve")
        .env("SLC_REASONER_BIND", "0.0.0.0:0")
        .env_remove("SLC_REASONER_API_KEYS")
        .env("SLC_LLM_BASE_URL", "http://127.0.0.1:9/v1")
        .env("SLC_LLM_MODEL", "m")
        .env(
            "SLC_DATABASE_URL",
            sqlite_url(&directory.path().join("r.db")),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API keys")
            && stderr.contains("SLC_REASONER_ALLOW_UNAUTHENTICATED=true"),
        "{stderr}"
    );
    let config = |extra: &[&str]| {
        let mut args = vec![
            "slc-reasoner",
            "--bind",
            "0.0.0.0:8090",
            "--llm-base-url",
            "http://x/v1",
            "--llm-model",
            "m",
        ];
        args.extend_from_slice(extra);
        <slc_reasoner::ServeConfig as clap::Parser>::parse_from(args)
    };
    assert!(config(&[]).check_exposure().is_err());
    assert!(config(&["--api-keys", "k"]).check_exposure().is_ok());
    assert!(
        config(&["--allow-unauthenticated", "true"])
            .check_exposure()
            .is_ok()
    );
}

/// With `SLC_REASONER_METRICS_KEYS`, `/metrics` wants that key (a client key is not one).
#[tokio::test]
async fn metrics_keys_guard_metrics() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let (router, _directory) = router_with(|config| {
        config.api_keys = vec!["edge-key".into()];
        config.metrics_keys = vec!["scrape-key".into()];
    })
    .await;
    for (key, status) in [
        (None, 401),
        (Some("edge-key"), 401),
        (Some("scrape-key"), 200),
    ] {
        let mut request = Request::builder().uri("/metrics");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{key:?}");
    }
}

//! The real `slc-reasoner` binary: `openapi` prints the committed document, `serve` comes up
//! from environment variables alone and answers on loopback.

use std::path::Path;
use std::process::{Command, Stdio};
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

/// Kills the child when the test ends, pass or fail.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_is_configured_by_environment_variables() {
    let upstream = ScriptedUpstream::answering(
        &[("<bo>", "a golden retriever puppy", "playful")],
        |_| "yes yes".into(),
        "ok",
    )
    .await;
    let directory = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_slc-reasoner"))
            .arg("serve")
            .env("SLC_REASONER_BIND", format!("127.0.0.1:{port}"))
            .env("SLC_LLM_BASE_URL", upstream.base_url())
            .env("SLC_LLM_MODEL", "env-vlm")
            .env("SLC_LLM_API_KEY", "env-upstream-key")
            .env(
                "SLC_DATABASE_URL",
                sqlite_url(&directory.path().join("env.db")),
            )
            .env("SLC_REASONER_API_KEYS", "edge-a,edge-b")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = test_client();
    let base = format!("http://127.0.0.1:{port}");
    let mut healthy = false;
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "slc-reasoner serve did not come up");
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

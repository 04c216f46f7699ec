//! Crash atomicity: a process killed (SIGKILL) in the middle of a registration transaction
//! leaves no partial concept. The test runs the app in a child process (this test binary,
//! re-executed into `child_server_process`), pauses it inside the transaction with a test hook,
//! kills it, restarts on the same database and looks for rows.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use slc_detector::registry::{Registry, RegistryOptions};

use crate::helpers::{
    TestOptions, base64_of, fresh_postgres_schema, postgres_url, solid_png, spawn_app,
    spawn_app_with_registry_options,
};

const CHILD_DATABASE_ENV: &str = "SLC_ATOMICITY_CHILD_DATABASE_URL";

/// Runs only as the child of the kill test.
#[tokio::test]
#[ignore = "runs as the child process of the atomicity kill test"]
async fn child_server_process() {
    let Ok(database_url) = std::env::var(CHILD_DATABASE_ENV) else {
        return;
    };
    let app = spawn_app_with_registry_options(
        TestOptions {
            database_url: Some(database_url),
            ..TestOptions::default()
        },
        RegistryOptions {
            pause_inside_registration: Some(Duration::from_secs(120)),
            ..RegistryOptions::default()
        },
    )
    .await;
    println!("LISTENING {}", app.address);
    tokio::time::sleep(Duration::from_secs(120)).await;
}

async fn kill_mid_registration_leaves_nothing(database_url: String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "atomicity::child_server_process",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DATABASE_ENV, &database_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let address = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("LISTENING ").map(str::to_string))
            .expect("the child never listened")
    })
    .await
    .unwrap();
    let (paused_sender, paused) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sender = Some(paused_sender);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("SLC-TEST-HOOK: paused inside registration")
                && let Some(sender) = sender.take()
            {
                let _ = sender.send(());
            }
        }
    });

    let images: Vec<String> = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
        .iter()
        .map(|rgb| base64_of(&solid_png(*rgb, 16, 16)))
        .collect();
    let registration = tokio::spawn(
        crate::helpers::http_client()
            .post(format!("http://{address}/v1/concepts"))
            .json(&json!({"id": "bo", "description": "<bo> is a dog.", "images": images}))
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(30), paused)
        .await
        .expect("the child never reached the pause inside the transaction")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        registration.await.unwrap().is_err(),
        "the killed server cannot have answered"
    );

    // The database as the crash left it: no concept row, no image row.
    let registry = Registry::connect(&database_url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(registry.row_counts().await.unwrap(), (0, 0));
    registry.close().await;
    // A restarted service sees nothing and can register the same id.
    let app = spawn_app(TestOptions {
        database_url: Some(database_url),
        ..TestOptions::default()
    })
    .await;
    let listed: serde_json::Value = app.get_json("/v1/concepts").await;
    assert_eq!(listed["concepts"], json!([]));
    crate::helpers::register(&app, "bo", "<bo> is a dog.", &[solid_png([1, 1, 1], 4, 4)]).await;
    assert_eq!(app.state.registry.row_counts().await.unwrap(), (1, 1));
    app.stop().await;
}

#[tokio::test]
async fn killed_mid_registration_leaves_no_partial_rows_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("crash.db").display()
    );
    kill_mid_registration_leaves_nothing(url).await;
}

#[tokio::test]
async fn killed_mid_registration_leaves_no_partial_rows_on_postgres() {
    let Some(base) = postgres_url() else { return };
    kill_mid_registration_leaves_nothing(fresh_postgres_schema(&base).await).await;
}

//! A tenant's data rights and privacy: the export, then the operator's deletion, leave
//! nothing of the tenant in the SQLite file's bytes, and the reasoner learns no tenant name.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{solid_png, spawn_app};
use crate::tenants::{ALICE, BOB, OPERATOR, call, noise_png, register_as, two_tenants, untar};

/// Every file of the SQLite database (main file, log, shared memory) as one byte string.
fn database_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{}{suffix}", path.display());
        if let Ok(contents) = std::fs::read(&file) {
            bytes.extend(contents);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn export_then_delete_a_tenant_leaves_nothing_in_the_sqlite_files_bytes() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("registry.sqlite");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let app = spawn_app(two_tenants(Some(url), |_| {})).await;
    let description = "<zq> is alice's one-eyed tabby, unmistakable-marker-4711.";
    let photo = noise_png(40, 30, 99);
    register_as(&app, ALICE, "zq", description, &photo).await;
    register_as(
        &app,
        ALICE,
        "bo",
        "<bo> is alice's dog.",
        &solid_png([3, 3, 3], 4, 4),
    )
    .await;
    register_as(
        &app,
        BOB,
        "bo",
        "<bo> is bob's dog, bob-marker-0815.",
        &solid_png([4, 4, 4], 4, 4),
    )
    .await;
    let concept: Value = call(&app, ALICE, Method::GET, "/v1/concepts/zq", None)
        .await
        .json()
        .await
        .unwrap();
    let sha256 = concept["images"][0]["sha256"].as_str().unwrap().to_string();
    let scenario =
        json!({"id": "pets", "description": "scenario-marker-2718", "concepts": ["zq", "bo"]});
    let created = call(&app, ALICE, Method::POST, "/v1/scenarios", Some(&scenario)).await;
    assert_eq!(created.status(), 201);
    let conversation: Value = call(&app, ALICE, Method::POST, "/v1/conversations", None)
        .await
        .json()
        .await
        .unwrap();
    let conversation = conversation["id"].as_str().unwrap().to_owned();

    // The export: the tenant's own data, all of it, and nothing of anyone else's.
    let response = call(&app, ALICE, Method::GET, "/v1/export", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let extracted = untar(&response.bytes().await.unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(extracted.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["tenant"], "alice");
    let ids: Vec<&str> = manifest["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bo", "zq"]);
    assert_eq!(manifest["concepts"][1]["description"], description);
    assert_eq!(
        manifest["concepts"][1]["images"][0]["sha256"],
        sha256.as_str()
    );
    assert_eq!(
        std::fs::read(extracted.path().join("concepts/zq/0.png")).unwrap(),
        photo
    );
    assert_eq!(
        manifest["scenarios"][0]["description"],
        "scenario-marker-2718"
    );
    assert_eq!(manifest["scenarios"][0]["concepts"], json!(["zq", "bo"]));
    assert_eq!(manifest["conversations"][0]["id"], conversation.as_str());
    assert!(
        !serde_json::to_string(&manifest)
            .unwrap()
            .contains("bob-marker")
    );

    let before = database_bytes(&path);
    assert!(
        contains(&before, description.as_bytes()),
        "the test must see what it looks for"
    );
    assert!(contains(&before, sha256.as_bytes()));
    assert!(contains(&before, b"scenario-marker-2718"));
    assert!(contains(&before, conversation.as_bytes()));

    let removed = call(&app, OPERATOR, Method::DELETE, "/v1/tenants/alice", None).await;
    assert_eq!(removed.status(), 200);
    let removed: Value = removed.json().await.unwrap();
    assert_eq!(
        (removed["concepts"].as_i64(), removed["images"].as_i64()),
        (Some(2), Some(2))
    );

    let after = database_bytes(&path);
    assert!(
        !contains(&after, description.as_bytes()),
        "the description is still in the file"
    );
    assert!(!contains(&after, b"unmistakable-marker-4711"));
    assert!(
        !contains(&after, sha256.as_bytes()),
        "the image hash is still in the file"
    );
    assert!(
        !contains(&after, &photo[photo.len() / 2..photo.len() / 2 + 64]),
        "image bytes remain"
    );
    assert!(
        !contains(&after, b"scenario-marker-2718"),
        "the scenario remains"
    );
    assert!(
        !contains(&after, conversation.as_bytes()),
        "the conversation remains"
    );
    assert!(contains(&after, b"bob-marker-0815"), "bob's data stays");
    let listed: Value = call(&app, ALICE, Method::GET, "/v1/concepts", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["concepts"], json!([]));
    assert_eq!(
        call(&app, BOB, Method::GET, "/v1/concepts/bo", None)
            .await
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn the_reasoner_gets_an_opaque_partition_per_tenant_and_no_tenant_name() {
    let reasoner = crate::ask::scripted_reasoner(crate::ask::Behaviour::Answer).await;
    let address = reasoner.address;
    let app = spawn_app(two_tenants(None, move |config| {
        config.reasoner_url = format!("http://{address}");
    }))
    .await;
    register_as(
        &app,
        ALICE,
        "bo",
        "<bo> is a dog.",
        &solid_png([1, 2, 3], 4, 4),
    )
    .await;
    register_as(
        &app,
        BOB,
        "bo",
        "<bo> is a dog.",
        &solid_png([1, 2, 3], 4, 4),
    )
    .await;
    let question = json!({"question": "Is <bo> a cat?", "concepts": ["bo"]});
    for key in [ALICE, ALICE, BOB] {
        let response = call(&app, key, Method::POST, "/v1/ask", Some(&question)).await;
        assert_eq!(response.status(), 200);
    }
    let received = reasoner.received.lock().unwrap().clone();
    let partitions: Vec<String> = received
        .iter()
        .map(|(headers, _)| {
            headers[shared_types::CACHE_PARTITION_HEADER]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(partitions[0], partitions[1], "one tenant, one partition");
    assert_ne!(partitions[0], partitions[2], "two tenants, two partitions");
    assert!(
        partitions
            .iter()
            .all(|p| p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    for (headers, body) in &received {
        let mut seen = String::from_utf8_lossy(body).to_string();
        for (name, value) in headers {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        for secret in ["alice", "bob", ALICE, BOB] {
            assert!(!seen.contains(secret), "{secret} reached the cloud: {seen}");
        }
    }
    app.stop().await;
}

//! Privacy: the query image is forwarded to the large model and nowhere else. It is not in the
//! database file, and the audit log holds kinds and sizes only.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_query_image_reaches_only_the_model_and_the_audit_log_holds_sizes_only() {
    let upstream = ScriptedUpstream::answering(
        &[("<bo>", "a golden retriever puppy", "playful")],
        |_| "yes yes".into(),
        "<bo> is asleep.",
    )
    .await;
    let directory = tempfile::tempdir().unwrap();
    let audit_path = directory.path().join("audit.jsonl");
    let audit_for_config = audit_path.clone();
    let app = spawn_app_with(&upstream, move |config| {
        config.audit_log = Some(audit_for_config)
    })
    .await;
    let question = "What is <bo> doing in this unusual secret place?";
    let (status, body) = app
        .post(
            "/v1/reason",
            &json!({
                "image": query_image_base64(),
                "question": question,
                "concepts": [{"id": "<bo>", "description": "<bo> is a cute golden retriever puppy."}],
                "cues": {"<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the bed"}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.state.reasoner.cache.close().await;

    // The database (and any journal beside it) never saw the image or the question.
    let image_b64 = query_image_base64();
    let needle = &image_b64.as_bytes()[..64];
    let raw_image = query_image_bytes();
    let app_directory = app.directory().unwrap();
    let mut scanned = 0;
    for entry in std::fs::read_dir(&app_directory).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        scanned += 1;
        assert!(!contains(&bytes, needle), "base64 image on disk");
        assert!(!contains(&bytes, &raw_image[..64]), "raw image on disk");
        assert!(!contains(&bytes, question.as_bytes()), "question on disk");
    }
    assert!(scanned >= 1, "the SQLite file exists");

    // One audit line per upstream call: kind and sizes, no content.
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|line| line["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["identity", "verify", "answer"]);
    let data_uri_len = query_image_data_uri().len() as u64;
    assert_eq!(lines[0]["image_bytes"], 0);
    assert_eq!(lines[1]["image_bytes"], data_uri_len);
    assert_eq!(lines[2]["image_bytes"], data_uri_len);
    for line in &lines {
        assert!(line["request_bytes"].as_u64().unwrap() > 0);
        assert_eq!(line["outcome"], "ok");
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            9,
            "kind, model, request_bytes, image_bytes, response_bytes, attempts, outcome, duration_ms, unix_ms: {keys:?}"
        );
    }
    assert!(!audit.contains(&image_b64[..64]));
    assert!(!audit.contains("secret place"));
    assert!(!audit.contains("golden retriever"));
    assert!(!audit.contains("asleep"));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

//! `recheck_mentioned` (beyond the paper): a concept the question names but the edge reported
//! absent gets one presence question, "Do you see {category} in the image?", per concept or
//! inside the batched call; "yes" recovers it without a location.

use serde_json::{Value, json};

use crate::helpers::*;

const IDENTITIES: &[(&str, &str, &str)] = &[
    ("<bo>", "a shiba inu", "black collar"),
    ("<lina>", "a young woman", "red scarf"),
    ("<rex>", "a grey cat", "green eyes"),
];

/// `<bo>` reported present with one location; `<lina>` absent and named in the question;
/// `<rex>` absent and not named.
fn turn(batched: bool, recheck: bool) -> Value {
    json!({
        "image": query_image_base64(),
        "question": "Is <LINA> playing with <bo>?",
        "concepts": [
            {"id": "<bo>", "description": "<bo> is a shiba inu with a black collar."},
            {"id": "<lina>", "description": "<lina> is a young woman in a red scarf."},
            {"id": "<rex>", "description": "<rex> is a grey cat with green eyes."},
        ],
        "cues": {
            "<bo>": {"present": true, "location-absolute": "center"},
            "<lina>": {"present": false},
            "<rex>": {"present": false},
        },
        "mode": "full",
        "options": {"batched_verification": batched, "recheck_mentioned": recheck},
    })
}

async fn upstream(answer: &'static str) -> ScriptedUpstream {
    ScriptedUpstream::answering(
        IDENTITIES,
        move |prompt| {
            let questions = prompt.lines().count();
            (1..=questions)
                .map(|n| format!("Q{n}. {answer}"))
                .collect::<Vec<_>>()
                .join("\n")
        },
        "They are.",
    )
    .await
}

const PRESENCE: &str = "Do you see a young woman in the image? (yes or no)";

#[tokio::test]
async fn a_mentioned_miss_is_recovered_per_concept_and_in_the_batch() {
    for (batched, calls) in [(false, 2), (true, 1)] {
        let upstream = upstream("Yes").await;
        let app = spawn_app(&upstream).await;
        let (status, body) = app.post("/v1/reason", &turn(batched, true)).await;
        assert_eq!(status, 200, "{body}");
        let verify = upstream.requests_of("verify");
        assert_eq!(verify.len(), calls, "batched {batched}");
        let prompts: Vec<String> = verify.iter().map(|r| r.user_text()).collect();
        if batched {
            assert_eq!(
                prompts[0],
                format!(
                    "Q1. Do you see a shiba inu at center of the image? (yes or no)\nQ2. {PRESENCE}"
                )
            );
        } else {
            assert!(prompts.contains(&format!("Q1. {PRESENCE}")), "{prompts:?}");
        }
        assert!(
            !prompts.concat().contains("grey cat"),
            "an unnamed miss is not rechecked"
        );
        assert_eq!(
            body["actions"],
            json!({"<bo>": "kept", "<lina>": "recovered", "<rex>": "not_present"})
        );
        assert_eq!(body["refined_cues"]["<lina>"], json!({"present": true}));
        let presence: Vec<&Value> = body["verifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["about"] == "presence")
            .collect();
        assert_eq!(presence.len(), 1);
        assert_eq!(presence[0]["concept"], "<lina>");
        // The answer's report (Table 9) has her present, with no location.
        let system = upstream.requests_of("answer")[0]
            .system()
            .unwrap()
            .to_owned();
        let report_start = system.find("\"<lina>\"").unwrap();
        let lina = &system[report_start..report_start + 200];
        assert!(lina.contains("\"present\": true"), "{lina}");
        assert!(!lina.contains("location"), "{lina}");
        let (_, metrics) = app.get_text("/metrics").await;
        assert!(metrics.contains("action=\"recovered\"} 1"), "{metrics}");
    }
}

#[tokio::test]
async fn a_no_or_the_option_off_leaves_the_miss_absent() {
    let upstream = upstream("No").await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/reason", &turn(true, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["actions"]["<lina>"], "not_present");
    assert_eq!(body["refined_cues"]["<lina>"], json!({"present": false}));

    // Off (the paper's default): no presence question at all.
    let upstream = upstream_yes().await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/reason", &turn(false, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.requests_of("verify").len(), 1);
    assert!(
        !upstream.requests_of("verify")[0]
            .user_text()
            .contains("in the image?")
    );
    assert_eq!(body["actions"]["<lina>"], "not_present");
}

async fn upstream_yes() -> ScriptedUpstream {
    upstream("Yes").await
}

//! The ablation modes of Table 5 and the text-only protocol of appendix D: which calls each
//! makes and what each answer prompt holds.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::paper::*;

const BO: &str = "<bo> is a cute golden retriever puppy with a playful expression.";
const BO_IDENTITY: &[(&str, &str, &str)] = &[(
    "<bo>",
    "a golden retriever puppy",
    "always playful expression",
)];

fn request(mode: &str, with_image: bool) -> Value {
    let mut request = json!({
        "question": "What is <bo> doing?",
        "concepts": [{"id": "<bo>", "description": BO}],
        "mode": mode,
    });
    if with_image {
        request["image"] = json!(query_image_base64());
        request["cues"] = json!({"<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the grass"}});
    }
    request
}

async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::answering(BO_IDENTITY, |_| "no no".into(), "<bo> is running.").await
}

#[tokio::test]
async fn no_reflection_trusts_the_cues() {
    let upstream = upstream().await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app
        .post("/v1/reason", &request("no_reflection", true))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.requests_of("verify").len(), 0);
    assert_eq!(upstream.requests().len(), 2);
    assert_eq!(body["actions"], json!({"<bo>": "unverified"}));
    assert_eq!(body["refined_cues"], request("no_reflection", true)["cues"]);
    let system = upstream.requests_of("answer")[0]
        .system()
        .unwrap()
        .to_owned();
    assert!(
        system.contains("\"location-relative\": \"on the grass\""),
        "{system}"
    );
    assert!(system.ends_with(TABLE_9_RULES));
}

#[tokio::test]
async fn no_detector_reports_identities_without_cues() {
    let upstream = upstream().await;
    let app = spawn_app(&upstream).await;
    let mut turn = request("no_detector", true);
    turn.as_object_mut().unwrap().remove("cues");
    let (status, body) = app.post("/v1/reason", &turn).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.requests().len(), 2);
    let answer = &upstream.requests_of("answer")[0];
    assert_eq!(
        answer.system().unwrap(),
        format!(
            "Detection Report\n{{\n  \"<bo>\": {{\n    \"category\": \"a golden retriever puppy\",\n    \"attributes\": \"always playful expression\"\n  }}\n}}\n\n{TABLE_9_RULES}"
        )
    );
    assert_eq!(answer.image_urls(), vec![query_image_data_uri()]);
    assert_eq!(body["refined_cues"], Value::Null);
    assert_eq!(body["actions"], json!({}));
}

#[tokio::test]
async fn pure_sends_the_raw_descriptions_with_the_question_in_one_call() {
    let upstream = upstream().await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/reason", &request("pure", true)).await;
    assert_eq!(status, 200, "{body}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].system(), None);
    assert_eq!(
        requests[0].user_text(),
        format!("<bo>: {BO}\n\nWhat is <bo> doing?")
    );
    assert_eq!(requests[0].image_urls(), vec![query_image_data_uri()]);
    assert_eq!(body["identities"], json!({}));
    assert_eq!(body["answer"], "<bo> is running.");
}

#[tokio::test]
async fn text_only_questions_use_identity_structured_descriptions() {
    let upstream = upstream().await;
    let app = spawn_app(&upstream).await;
    for mode in ["full", "no_reflection", "no_detector"] {
        let (status, body) = app.post("/v1/reason", &request(mode, false)).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(body["mode"], mode);
    }
    // One identity call (then cached) and one answer per turn, none with an image.
    assert_eq!(upstream.requests_of("identity").len(), 1);
    let answers = upstream.requests_of("answer");
    assert_eq!(answers.len(), 3);
    for answer in answers {
        assert!(answer.image_urls().is_empty());
        assert_eq!(answer.system(), None);
        assert_eq!(
            answer.user_text(),
            "{\n  \"<bo>\": {\n    \"category\": \"a golden retriever puppy\",\n    \"attributes\": \"always playful expression\"\n  }\n}\n\nWhat is <bo> doing?"
        );
    }
}

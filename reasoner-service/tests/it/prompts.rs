//! What the reasoner sends upstream in a full turn: the paper's prompts verbatim, the query
//! image as a data URI and nothing else, and exactly the expected number of calls.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::paper::*;

fn figure_7_request() -> Value {
    json!({
        "image": query_image_base64(),
        "question": "Can you see <by> in this photo? Answer the question using a single word Yes or No.",
        "concepts": [
            {"id": "<by>", "description": FIGURE_7_BY},
            {"id": "<hy>", "description": FIGURE_7_HY},
        ],
        "cues": {
            "<by>": {"present": true, "location-absolute": "bottom-right quadrant", "location-relative": "to the right of <hy>"},
            "<hy>": {"present": true, "location-absolute": "top-left quadrant", "location-relative": "to the left of <hy>"},
        },
        "mode": "full",
    })
}

#[tokio::test]
async fn a_full_turn_sends_the_papers_prompts_verbatim() {
    let upstream =
        ScriptedUpstream::answering(FIGURE_7_IDENTITIES, |_| "q1. yes\nq2. yes".into(), "Yes.")
            .await;
    let app = spawn_app(&upstream).await;
    let (status, body) = app.post("/v1/reason", &figure_7_request()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["answer"], "Yes.");

    let requests = upstream.requests();
    // Identity (one call per concept, so no description can speak for another), one
    // verification per detected concept, answer.
    assert_eq!(requests.len(), 5, "{requests:#?}");
    assert_eq!(body["upstream"]["calls"], 5);
    assert_eq!(body["upstream"]["retries"], 0);
    assert_eq!(body["upstream"]["prompt_tokens"], 500);
    assert_eq!(body["upstream"]["completion_tokens"], 35);
    assert_eq!(body["upstream"]["model"], "test-vlm");

    // The identity calls run concurrently, so their order is not fixed.
    let mut identity_prompts: Vec<String> = upstream
        .requests_of("identity")
        .iter()
        .map(|identity| {
            assert_eq!(identity.system(), Some(TABLE_7_SYSTEM));
            assert!(
                identity.image_urls().is_empty(),
                "the identity step is text-only"
            );
            assert_eq!(identity.body["model"], "test-vlm");
            assert_eq!(identity.body["max_tokens"], 128);
            assert_eq!(
                identity.authorization.as_deref(),
                Some("Bearer upstream-secret")
            );
            identity.user_text()
        })
        .collect();
    identity_prompts.sort();
    assert_eq!(
        identity_prompts,
        vec![
            format!("Concept List\n<by>: {FIGURE_7_BY}"),
            format!("Concept List\n<hy>: {FIGURE_7_HY}"),
        ]
    );

    let mut verifications: Vec<String> = upstream
        .requests_of("verify")
        .iter()
        .map(|request| {
            assert_eq!(request.system(), Some(TABLE_8_SYSTEM));
            assert_eq!(request.image_urls(), vec![query_image_data_uri()]);
            request.user_text()
        })
        .collect();
    verifications.sort();
    assert_eq!(
        verifications,
        vec![
            "Q1. Do you see a young female anime character at top-left quadrant of the image? (yes or no)\nQ2. Is a young female anime character to the left of <hy>? (yes or no)".to_owned(),
            "Q1. Do you see a young male at bottom-right quadrant of the image? (yes or no)\nQ2. Is a young male to the right of <hy>? (yes or no)".to_owned(),
        ]
    );

    let answer = &upstream.requests_of("answer")[0];
    let expected_report = r#"{
  "<by>": {
    "present": true,
    "category": "a young male",
    "attributes": "with blonde hair; serious expression",
    "location-absolute": "bottom-right quadrant",
    "location-relative": "to the right of <hy>"
  },
  "<hy>": {
    "present": true,
    "category": "a young female anime character",
    "attributes": "with black hair; red eyes",
    "location-absolute": "top-left quadrant",
    "location-relative": "to the left of <hy>"
  }
}"#;
    assert_eq!(
        answer.system().unwrap(),
        format!("Detection Report\n{expected_report}\n\n{TABLE_9_RULES}")
    );
    assert_eq!(
        answer.user_text(),
        "Can you see <by> in this photo? Answer the question using a single word Yes or No."
    );
    assert_eq!(answer.image_urls(), vec![query_image_data_uri()]);

    // Nothing but the query image ever leaves: one image per visual call, no other fields.
    for request in &requests {
        assert!(request.image_urls().len() <= 1);
        for url in request.image_urls() {
            assert_eq!(url, query_image_data_uri());
        }
        let keys: Vec<&String> = request.body.as_object().unwrap().keys().collect();
        for key in keys {
            assert!(
                [
                    "model",
                    "messages",
                    "temperature",
                    "max_tokens",
                    "response_format"
                ]
                .contains(&key.as_str()),
                "unexpected field {key}"
            );
        }
    }

    // The trace in the response.
    assert_eq!(body["identities"]["<by>"]["category"], "a young male");
    assert_eq!(body["verifications"].as_array().unwrap().len(), 4);
    assert_eq!(body["actions"], json!({"<by>": "kept", "<hy>": "kept"}));
    assert_eq!(body["refined_cues"], figure_7_request()["cues"]);
}

#[tokio::test]
async fn batched_verification_asks_all_questions_in_one_call_numbered_across_concepts() {
    let upstream =
        ScriptedUpstream::answering(FIGURE_7_IDENTITIES, |_| "yes yes yes yes".into(), "Yes.")
            .await;
    let app = spawn_app(&upstream).await;
    let mut request = figure_7_request();
    request["options"] = json!({"batched_verification": true, "max_answer_tokens": 16});
    let (status, body) = app.post("/v1/reason", &request).await;
    assert_eq!(status, 200, "{body}");
    let verify = upstream.requests_of("verify");
    assert_eq!(verify.len(), 1);
    assert_eq!(
        verify[0].user_text(),
        "Q1. Do you see a young male at bottom-right quadrant of the image? (yes or no)\n\
         Q2. Is a young male to the right of <hy>? (yes or no)\n\
         Q3. Do you see a young female anime character at top-left quadrant of the image? (yes or no)\n\
         Q4. Is a young female anime character to the left of <hy>? (yes or no)"
    );
    assert_eq!(upstream.requests().len(), 4);
    assert_eq!(upstream.requests_of("answer")[0].body["max_tokens"], 16);
}

#[tokio::test]
async fn identities_are_extracted_once_per_description_then_read_from_the_cache() {
    let upstream =
        ScriptedUpstream::answering(FIGURE_7_IDENTITIES, |_| "yes yes".into(), "Yes.").await;
    let app = spawn_app(&upstream).await;
    let (status, first) = app.post("/v1/reason", &figure_7_request()).await;
    assert_eq!(status, 200);
    assert_eq!(first["upstream"]["identity_cache_hits"], 0);
    let (status, second) = app.post("/v1/reason", &figure_7_request()).await;
    assert_eq!(status, 200);
    assert_eq!(second["upstream"]["identity_cache_hits"], 2);
    assert_eq!(
        second["upstream"]["calls"], 3,
        "no identity call on the second turn"
    );
    assert_eq!(
        upstream.requests_of("identity").len(),
        2,
        "one call per concept on the first turn"
    );
    assert_eq!(second["identities"], first["identities"]);

    // A new concept alongside cached ones: only the new one is asked about.
    let (status, third) = app
        .post(
            "/v1/identities",
            &json!({"concepts": [
                {"id": "<by>", "description": FIGURE_7_BY},
                {"id": "<ys>", "description": crate::paper::FIGURE_8_YS},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{third}");
    let identity_calls = upstream.requests_of("identity");
    assert_eq!(identity_calls.len(), 3);
    assert_eq!(
        identity_calls[2].user_text(),
        format!("Concept List\n<ys>: {}", crate::paper::FIGURE_8_YS)
    );
    assert_eq!(third["upstream"]["identity_cache_hits"], 1);
}

/// With structured output on, verification asks for `{"Q1": "yes"|"no", ...}` and reads the
/// answers by key (here given out of order).
#[tokio::test]
async fn verification_uses_a_yes_no_schema_when_structured_output_is_on() {
    let upstream = ScriptedUpstream::answering(
        FIGURE_7_IDENTITIES,
        |_| r#"{"Q2": "no", "Q1": "yes", "Q4": "yes", "Q3": "no"}"#.into(),
        "Yes.",
    )
    .await;
    let app = spawn_app_with(&upstream, |config| config.llm_json_schema = true).await;
    let mut request = figure_7_request();
    request["options"] = json!({"batched_verification": true});
    let (status, body) = app.post("/v1/reason", &request).await;
    assert_eq!(status, 200, "{body}");
    let verify = &upstream.requests_of("verify")[0];
    let schema = &verify.body["response_format"]["json_schema"]["schema"];
    assert_eq!(schema["required"], json!(["Q1", "Q2", "Q3", "Q4"]));
    assert_eq!(schema["properties"]["Q3"], json!({"enum": ["yes", "no"]}));
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(verify.body["max_tokens"], 64);
    let answers: Vec<&str> = body["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["yes", "no", "no", "yes"]);
    assert_eq!(
        body["actions"],
        json!({"<by>": "dropped_location_relative", "<hy>": "dropped_location_absolute"})
    );
}

#[tokio::test]
async fn json_schema_response_format_is_sent_when_enabled() {
    let upstream =
        ScriptedUpstream::answering(FIGURE_9_IDENTITIES, |_| "no no".into(), "No.").await;
    let app = spawn_app_with(&upstream, |config| config.llm_json_schema = true).await;
    let (status, body) = app
        .post(
            "/v1/identities",
            &json!({"concepts": [{"id": "<butin>", "description": FIGURE_9_BUTIN}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let identity = &upstream.requests_of("identity")[0];
    let format = &identity.body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(
        format["json_schema"]["schema"]["required"],
        json!(["<butin>"])
    );
    assert_eq!(
        format["json_schema"]["schema"]["properties"]["<butin>"]["required"],
        json!(["category", "attributes"])
    );
    assert_eq!(body["fallbacks"], json!([]));
    assert_eq!(
        body["identities"]["<butin>"]["category"],
        "a cream-colored Siberian Husky with striking blue eyes"
    );
}

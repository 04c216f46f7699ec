//! Every case of the refinement rule, as one data-driven table run through the real server
//! against the scripted upstream, including the paper's Figures 7, 8 and 9.
//!
//! Rule (section 3.2.2): two "no" → present = false; one "no" → drop that location; "yes"
//! keeps the cue. A location the edge left out is not asked about.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::paper::*;

struct Case {
    name: &'static str,
    concepts: Vec<(&'static str, &'static str)>,
    identities: &'static [(&'static str, &'static str, &'static str)],
    cues: Value,
    batched: bool,
    /// Reply per verification prompt, found by the category it asks about.
    replies: Vec<(&'static str, &'static str)>,
    expected_verify_calls: usize,
    expected_actions: Value,
    expected_refined: Value,
    /// (concept, field, parsed answer) in the order the response lists them.
    expected_answers: Vec<(&'static str, &'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    let generic: &'static [(&str, &str, &str)] = &[
        (
            "<bo>",
            "a golden retriever puppy",
            "always playful expression",
        ),
        ("<mam>", "a grey cat", "sleepy"),
    ];
    let bo = (
        "<bo>",
        "<bo> is a cute golden retriever puppy with a playful expression.",
    );
    let mam = ("<mam>", "<mam> is a grey cat that is always sleepy.");
    let both = json!({"present": true, "location-absolute": "center", "location-relative": "next to the sofa"});
    vec![
        Case {
            name: "Figure 7: both concepts confirmed, both kept",
            concepts: vec![("<by>", FIGURE_7_BY), ("<hy>", FIGURE_7_HY)],
            identities: FIGURE_7_IDENTITIES,
            cues: json!({
                "<by>": {"present": true, "location-absolute": "bottom-right quadrant", "location-relative": "to the right of <hy>"},
                "<hy>": {"present": true, "location-absolute": "top-left quadrant", "location-relative": "to the left of <hy>"},
            }),
            batched: false,
            replies: vec![
                ("a young male", "q1. yes\nq2. yes"),
                ("a young female anime character", "q1. yes\nq2. yes"),
            ],
            expected_verify_calls: 2,
            expected_actions: json!({"<by>": "kept", "<hy>": "kept"}),
            expected_refined: json!({
                "<by>": {"present": true, "location-absolute": "bottom-right quadrant", "location-relative": "to the right of <hy>"},
                "<hy>": {"present": true, "location-absolute": "top-left quadrant", "location-relative": "to the left of <hy>"},
            }),
            expected_answers: vec![
                ("<by>", "location-absolute", "yes"),
                ("<by>", "location-relative", "yes"),
                ("<hy>", "location-absolute", "yes"),
                ("<hy>", "location-relative", "yes"),
            ],
        },
        Case {
            name: "Figure 8: <tr> absent is not verified; <ys> false positive suppressed",
            concepts: vec![("<tr>", FIGURE_8_TR), ("<ys>", FIGURE_8_YS)],
            identities: FIGURE_8_IDENTITIES,
            cues: json!({
                "<tr>": {"present": false, "location-absolute": "", "location-relative": ""},
                "<ys>": {"present": true, "location-absolute": "bottom-right quadrant", "location-relative": "to the right of a male"},
            }),
            batched: false,
            replies: vec![("a young female anime character", "q1. no\nq2. no")],
            expected_verify_calls: 1,
            expected_actions: json!({"<tr>": "not_present", "<ys>": "suppressed"}),
            expected_refined: json!({"<tr>": {"present": false}, "<ys>": {"present": false}}),
            expected_answers: vec![
                ("<ys>", "location-absolute", "no"),
                ("<ys>", "location-relative", "no"),
            ],
        },
        Case {
            name: "Figure 9: <butin> false positive suppressed",
            concepts: vec![("<butin>", FIGURE_9_BUTIN)],
            identities: FIGURE_9_IDENTITIES,
            cues: json!({"<butin>": {"present": true, "location-absolute": "top-left quadrant", "location-relative": "on top of the person's lap"}}),
            batched: false,
            replies: vec![("Siberian Husky", "q1. no\nq2. no")],
            expected_verify_calls: 1,
            expected_actions: json!({"<butin>": "suppressed"}),
            expected_refined: json!({"<butin>": {"present": false}}),
            expected_answers: vec![
                ("<butin>", "location-absolute", "no"),
                ("<butin>", "location-relative", "no"),
            ],
        },
        Case {
            name: "yes then no: the relative location is dropped",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": both}),
            batched: false,
            replies: vec![("puppy", "yes no")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "dropped_location_relative"}),
            expected_refined: json!({"<bo>": {"present": true, "location-absolute": "center"}}),
            expected_answers: vec![
                ("<bo>", "location-absolute", "yes"),
                ("<bo>", "location-relative", "no"),
            ],
        },
        Case {
            name: "no then yes: the absolute location is dropped",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": both}),
            batched: false,
            replies: vec![("puppy", "No Yes")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "dropped_location_absolute"}),
            expected_refined: json!({"<bo>": {"present": true, "location-relative": "next to the sofa"}}),
            expected_answers: vec![
                ("<bo>", "location-absolute", "no"),
                ("<bo>", "location-relative", "yes"),
            ],
        },
        Case {
            name: "an unparseable reply counts as two no: suppressed",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": both}),
            batched: false,
            replies: vec![("puppy", "I think maybe, yesterday")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "suppressed"}),
            expected_refined: json!({"<bo>": {"present": false}}),
            expected_answers: vec![
                ("<bo>", "location-absolute", "no"),
                ("<bo>", "location-relative", "no"),
            ],
        },
        Case {
            name: "a reply with one answer: the missing second counts as no",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": both}),
            batched: false,
            replies: vec![("puppy", "Yes.")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "dropped_location_relative"}),
            expected_refined: json!({"<bo>": {"present": true, "location-absolute": "center"}}),
            expected_answers: vec![
                ("<bo>", "location-absolute", "yes"),
                ("<bo>", "location-relative", "no"),
            ],
        },
        Case {
            name: "only an absolute location, answered no: dropped, one question asked",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": {"present": true, "location-absolute": "center", "location-relative": ""}}),
            batched: false,
            replies: vec![("puppy", "no")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "dropped_location_absolute"}),
            expected_refined: json!({"<bo>": {"present": true}}),
            expected_answers: vec![("<bo>", "location-absolute", "no")],
        },
        Case {
            name: "only a relative location, answered yes: kept",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": {"present": true, "location-relative": "next to the sofa"}}),
            batched: false,
            replies: vec![("puppy", "yes")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "kept"}),
            expected_refined: json!({"<bo>": {"present": true, "location-relative": "next to the sofa"}}),
            expected_answers: vec![("<bo>", "location-relative", "yes")],
        },
        Case {
            name: "present without locations: nothing to ask, kept",
            concepts: vec![bo],
            identities: generic,
            cues: json!({"<bo>": {"present": true}}),
            batched: false,
            replies: vec![],
            expected_verify_calls: 0,
            expected_actions: json!({"<bo>": "kept"}),
            expected_refined: json!({"<bo>": {"present": true}}),
            expected_answers: vec![],
        },
        Case {
            name: "batched: four questions, four answers across two concepts",
            concepts: vec![bo, mam],
            identities: generic,
            cues: json!({"<bo>": both, "<mam>": both}),
            batched: true,
            replies: vec![("puppy", "yes no no no")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "dropped_location_relative", "<mam>": "suppressed"}),
            expected_refined: json!({
                "<bo>": {"present": true, "location-absolute": "center"},
                "<mam>": {"present": false},
            }),
            expected_answers: vec![
                ("<bo>", "location-absolute", "yes"),
                ("<bo>", "location-relative", "no"),
                ("<mam>", "location-absolute", "no"),
                ("<mam>", "location-relative", "no"),
            ],
        },
        Case {
            name: "batched: a short reply leaves the later questions at no",
            concepts: vec![bo, mam],
            identities: generic,
            cues: json!({"<bo>": both, "<mam>": {"present": true, "location-absolute": "left"}}),
            batched: true,
            replies: vec![("puppy", "yes yes")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "kept", "<mam>": "dropped_location_absolute"}),
            expected_refined: json!({"<bo>": both, "<mam>": {"present": true}}),
            expected_answers: vec![
                ("<bo>", "location-absolute", "yes"),
                ("<bo>", "location-relative", "yes"),
                ("<mam>", "location-absolute", "no"),
            ],
        },
        Case {
            name: "a concept the edge did not report is not verified",
            concepts: vec![bo, mam],
            identities: generic,
            cues: json!({"<bo>": both}),
            batched: false,
            replies: vec![("puppy", "yes yes")],
            expected_verify_calls: 1,
            expected_actions: json!({"<bo>": "kept"}),
            expected_refined: json!({"<bo>": both}),
            expected_answers: vec![
                ("<bo>", "location-absolute", "yes"),
                ("<bo>", "location-relative", "yes"),
            ],
        },
    ]
}

#[tokio::test]
async fn the_refinement_rule_table() {
    for case in cases() {
        let replies: HashMap<&str, &str> = case.replies.iter().copied().collect();
        let upstream = ScriptedUpstream::answering(
            case.identities,
            move |prompt| {
                replies
                    .iter()
                    .find(|(needle, _)| prompt.contains(**needle))
                    .map(|(_, reply)| reply.to_string())
                    .unwrap_or_else(|| panic!("no scripted reply for {prompt}"))
            },
            "scripted answer",
        )
        .await;
        let app = spawn_app(&upstream).await;
        let concepts: Vec<Value> = case
            .concepts
            .iter()
            .map(|(id, description)| json!({"id": id, "description": description}))
            .collect();
        let request = json!({
            "image": query_image_data_uri(),
            "question": "What is in this image?",
            "concepts": concepts,
            "cues": case.cues,
            "mode": "full",
            "options": {"batched_verification": case.batched},
        });
        let (status, body) = app.post("/v1/reason", &request).await;
        assert_eq!(status, 200, "{}: {body}", case.name);
        assert_eq!(
            upstream.requests_of("verify").len(),
            case.expected_verify_calls,
            "{}",
            case.name
        );
        assert_eq!(body["actions"], case.expected_actions, "{}", case.name);
        assert_eq!(body["refined_cues"], case.expected_refined, "{}", case.name);
        let answers: Vec<(String, String, String)> = body["verifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["concept"].as_str().unwrap().to_owned(),
                    v["about"].as_str().unwrap().to_owned(),
                    v["answer"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String, String)> = case
            .expected_answers
            .iter()
            .map(|(c, f, a)| (c.to_string(), f.to_string(), a.to_string()))
            .collect();
        assert_eq!(answers, expected, "{}", case.name);

        // The answer step sees exactly the refined report.
        let answer = &upstream.requests_of("answer")[0];
        let system = answer.system().unwrap();
        let report_text = system
            .strip_prefix("Detection Report\n")
            .and_then(|rest| rest.split("\n\nRules\n").next())
            .unwrap();
        let report: Value = serde_json::from_str(report_text).unwrap();
        for (id, refined) in case.expected_refined.as_object().unwrap() {
            assert_eq!(report[id]["present"], refined["present"], "{}", case.name);
            for field in ["location-absolute", "location-relative"] {
                assert_eq!(
                    report[id][field], refined[field],
                    "{} {id} {field}",
                    case.name
                );
            }
        }
        // Every concept of the turn is in the report; unreported ones as absent.
        for (id, _) in &case.concepts {
            assert!(report[id]["category"].is_string(), "{} {id}", case.name);
            if case.cues.get(*id).is_none() {
                assert_eq!(report[id]["present"], false, "{} {id}", case.name);
            }
        }
        app.stop().await;
    }
}

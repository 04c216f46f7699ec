//! Grounding boxes (`boxes: true`): a model double that grounds at a known place in the
//! resized image, mapped back to the original's pixels; the Table 6 call unchanged and no
//! grounding call when off; boxes kept on the edge by `/v1/ask`; and the real engine on the
//! tiny checkpoint, whose boxes are noise but must be valid boxes inside the image.

use serde_json::{Value, json};

use crate::doubles::DoubleControl;
use crate::helpers::{
    TestOptions, assert_error, base64_of, fixture, register, solid_png, spawn_app,
};

#[tokio::test]
async fn a_known_box_in_the_resized_image_is_mapped_to_the_original() {
    let app = spawn_app(TestOptions::default()).await;
    register(
        &app,
        "bo",
        "<bo> is a dog.",
        &[solid_png([250, 10, 10], 8, 8)],
    )
    .await;
    register(
        &app,
        "mam",
        "<mam> is a cat.",
        &[solid_png([10, 10, 250], 8, 8)],
    )
    .await;
    *app.control.present_ids.lock().unwrap() = vec!["<bo>".into()];
    // 1000×500 is seen as 1008×504: the box covers the right half of what the model saw.
    *app.control.box_reply.lock().unwrap() = r#"{"bbox_2d": [504, 0, 1008, 504]}"#.into();
    let image = solid_png([0, 128, 0], 1000, 500);
    let detect = |boxes: bool| json!({"image": base64_of(&image), "concepts": ["bo", "mam"], "boxes": boxes});

    let body: Value = app
        .post_json("/v1/detect", &detect(false))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["cues"]["<bo>"].get("box").is_none(), "{body}");
    assert_eq!(
        app.control.seen().len(),
        1,
        "no grounding call without boxes"
    );

    let response = app.post_json("/v1/detect", &detect(true)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["cues"]["<bo>"]["box"],
        json!([500, 0, 1000, 500]),
        "{body}"
    );
    assert!(
        body["cues"]["<mam>"].get("box").is_none(),
        "an absent concept has no box"
    );
    let seen = app.control.seen();
    // The same Table 6 call as without boxes, then one grounding call for the present one.
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].system_text, seen[0].system_text);
    assert_eq!(seen[1].user_text, seen[0].user_text);
    assert_eq!(seen[1].json_schema, seen[0].json_schema);
    let grounding = &seen[2];
    assert!(
        grounding.user_text.contains("Locate <bo> in the image"),
        "{}",
        grounding.user_text
    );
    assert!(grounding.user_text.contains("<bo> is a dog."));
    assert_eq!(grounding.adapter, None);
    let schema = grounding.json_schema.as_ref().unwrap();
    assert_eq!(schema["properties"]["bbox_2d"]["items"]["type"], "integer");
    assert_eq!(schema["properties"]["bbox_2d"]["items"]["maximum"], 1008);

    // Outside the image: clamped.
    *app.control.box_reply.lock().unwrap() = r#"{"bbox_2d": [900, 400, 5000, 5000]}"#.into();
    let body: Value = app
        .post_json("/v1/detect", &detect(true))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["cues"]["<bo>"]["box"],
        json!([893, 397, 1000, 500]),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_real_engine_grounds_inside_the_image() {
    let app = crate::real_engine::spawn_real().await;
    register(&app, "bo", "A Shiba Inu.", &[fixture("bo_train_0.jpg")]).await;
    register(
        &app,
        "mug",
        "A blue mug.",
        &[solid_png([20, 40, 200], 64, 48)],
    )
    .await;
    let query = fixture("bo_test_3.jpg");
    let (width, height) = image::load_from_memory(&query)
        .unwrap()
        .into_rgb8()
        .dimensions();
    let response = app
        .post_json(
            "/v1/detect",
            &json!({"image": base64_of(&query), "concepts": ["bo", "mug"], "boxes": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    for (id, cue) in body["cues"].as_object().unwrap() {
        match cue.get("box") {
            Some(bbox) => {
                assert_eq!(cue["present"], true, "{id}: {cue}");
                let bbox: Vec<u64> = serde_json::from_value(bbox.clone()).unwrap();
                assert_eq!(bbox.len(), 4, "{id}: {cue}");
                assert!(bbox[0] <= bbox[2] && bbox[1] <= bbox[3], "{id}: {cue}");
                assert!(
                    bbox[2] <= u64::from(width) && bbox[3] <= u64::from(height),
                    "{id}: {cue}"
                );
            }
            // The grammar makes every grounding output a box: a present concept without one
            // means the output did not fit its token budget.
            None => assert_eq!(cue["present"], false, "{id}: {cue}"),
        }
    }
    app.stop().await;
}

/// A model that cannot ground (no resize rule to map boxes through): `boxes` is refused on
/// both routes before detection runs, not after.
#[tokio::test]
async fn boxes_on_a_model_that_cannot_ground_are_refused_before_any_work() {
    let control = DoubleControl::default();
    *control.no_resize_rule.lock().unwrap() = true;
    let app = spawn_app(TestOptions {
        control,
        ..TestOptions::default()
    })
    .await;
    register(
        &app,
        "bo",
        "<bo> is a dog.",
        &[solid_png([250, 10, 10], 8, 8)],
    )
    .await;
    let image = base64_of(&solid_png([0, 128, 0], 64, 48));
    let detect = json!({"image": image, "concepts": ["bo"], "boxes": true});
    assert_error(
        app.post_json("/v1/detect", &detect).await,
        422,
        "invalid_request",
    )
    .await;
    let ask =
        json!({"image": image, "question": "Where is <bo>?", "concepts": ["bo"], "boxes": true});
    assert_error(app.post_json("/v1/ask", &ask).await, 422, "invalid_request").await;
    assert_eq!(
        app.control.seen().len(),
        0,
        "no model call for a refused request"
    );
    app.stop().await;
}

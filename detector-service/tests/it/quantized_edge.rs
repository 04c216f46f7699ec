//! The edge served with `SLC_QUANT=int8` and `int4` on the tiny fixtures: detection still
//! decodes a cue set that parses under the schema, with jump-forward and the bank's adapter
//! applied unmerged on the quantized base.

use serde_json::{Value, json};

use crate::helpers::{TestOptions, data_url, fixture, register, spawn_app};

#[tokio::test]
async fn quantized_edges_detect_under_the_schema_with_jump_forward() {
    for quant in ["int8", "int4"] {
        let app = spawn_app(TestOptions {
            real_engine: true,
            ..TestOptions::tweak(move |config| config.quant = Some(quant.into()))
        })
        .await;
        app.state
            .workers
            .readiness()
            .unwrap_or_else(|e| panic!("{quant}: the quantized engine loads: {e:?}"));
        register(&app, "bo", "A Shiba Inu.", &[fixture("bo_train_0.jpg")]).await;
        let request = json!({
            "image": data_url(&fixture("bo_test_3.jpg"), "image/jpeg"),
            "concepts": ["bo"]
        });
        let response = app.post_json("/v1/detect", &request).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{quant}: {body}");
        let cue = &body["cues"]["<bo>"];
        assert!(cue["present"].is_boolean(), "{quant}: {body}");
        if cue["present"] == true {
            assert!(cue["location-absolute"].is_string(), "{quant}: {cue}");
        }
        let usage = &body["usage"];
        assert!(
            usage["decode_steps"].as_u64().unwrap() < usage["completion_tokens"].as_u64().unwrap(),
            "{quant}: jump-forward feeds forced runs in one step: {usage}"
        );
        assert!(body["adapter"]["name"].is_string(), "{quant}: {body}");
        let metrics = app.get_text("/metrics").await;
        assert!(
            metrics.contains("slc_detector_invalid_model_outputs_total 0"),
            "{quant}: every output parsed"
        );
        app.stop().await;
    }
}

//! `POST /v1/detect`: the small model's cue set for a query image and registered concepts.

use std::time::Instant;

use axum::extract::State;
use shared_types::{AdapterChoice, DetectRequest, DetectResponse, ErrorBody, Timings, Usage};
use slc_engine::lora::AdapterMix;

use crate::detection::{
    ConceptIsolation, TABLE6_SYSTEM_PROMPT, cue_set_schema, cue_set_token_budget,
    location_chars_within, normalize_cue_set, table6_user_text,
};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::grounding;
use crate::images::DecodedImage;
use crate::model::{
    AdapterSelection, ContentPart, GenerationOutput, GenerationRequest, PromptImage, PromptMessage,
    Role, SamplingParams,
};
use crate::registry::{ConceptRecord, ScenarioRecord};
use crate::routes::turn_concepts::{ConceptsAsked, choose_concepts};
use crate::state::AppState;
use crate::tenants::Scope;

/// Detect registered concepts in an image (paper Table 6).
#[utoipa::path(
    post,
    path = "/v1/detect",
    tag = "detection",
    request_body(content = DetectRequest, example = json!({
        "image": "data:image/jpeg;base64,/9j/4AAQSkZJRg...",
        "concepts": ["bo", "<mam>"],
        "boxes": true
    })),
    responses(
        (status = 200, body = DetectResponse, example = json!({
            "cues": {
                "<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa", "box": [120, 80, 410, 360]},
                "<mam>": {"present": false}
            },
            "adapter": {"name": "meta-3", "similarity": 0.82},
            "usage": {"prompt_tokens": 412, "completion_tokens": 38, "decode_steps": 17},
            "timings": {"queue_ms": 0.4, "vision_ms": 310.0, "prefill_ms": 520.0, "decode_ms": 900.0, "total_ms": 1731.0}
        })),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "Unknown concept ids, or an unknown `scenario` (`unknown_scenario`)", body = ErrorBody),
        (status = 413, description = "Body or image too large, or too many concepts (the list and the scenario's members together)", body = ErrorBody),
        (status = 422, description = "Invalid image or concept list, or neither `concepts` nor `scenario`", body = ErrorBody),
        (status = 429, description = "Model queue full", body = ErrorBody),
        (status = 504, description = "Deadline passed", body = ErrorBody),
    )
)]
pub async fn detect(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(request): ApiJson<DetectRequest>,
) -> Result<axum::Json<DetectResponse>, ApiError> {
    if request.boxes {
        grounding_rule(&state)?;
    }
    let asked = ConceptsAsked {
        concepts: (!request.concepts.is_empty()).then_some(request.concepts.as_slice()),
        scenario: request.scenario.as_deref(),
        default_rule: None,
    };
    let chosen = choose_concepts(&state, &scope.registry, asked).await?;
    let image = state.images.base64(&request.image, "image").await?;
    let detection = run_detection(
        &state,
        &image,
        &chosen.records,
        chosen.scenario.as_ref(),
        request.boxes,
    )
    .await?;
    Ok(axum::Json(detection))
}

/// Runs the Table 6 detection under the edge's concept isolation: one prompt for all the
/// concepts (the paper's way), or one per concept (`isolation.rs`), within one deadline; with
/// `boxes`, then one grounding call per concept reported present (`grounding.rs`). The
/// adapter of `scenario`'s members is its cached Eq. 1 choice (per revision).
pub async fn run_detection(
    state: &AppState,
    image: &DecodedImage,
    records: &[ConceptRecord],
    scenario: Option<&ScenarioRecord>,
    boxes: bool,
) -> Result<DetectResponse, ApiError> {
    let deadline = state.deadline();
    let mut response = match state.concept_isolation {
        ConceptIsolation::Joint => {
            detect_together(state, image, records, scenario, deadline).await?
        }
        ConceptIsolation::PerConcept => {
            super::isolation::detect_each(state, image, records, deadline).await?
        }
    };
    if boxes {
        let (cues, usage) = (&mut response.cues, &mut response.usage);
        add_boxes(state, image, records, cues, usage, deadline).await?;
    }
    Ok(response)
}

/// One Table 6 detection on a worker, constrained by the cue-set schema for exactly these
/// concepts, with the adapter chosen from their embeddings.
pub(super) async fn detect_together(
    state: &AppState,
    image: &DecodedImage,
    records: &[ConceptRecord],
    scenario: Option<&ScenarioRecord>,
    deadline: Instant,
) -> Result<DetectResponse, ApiError> {
    let started = Instant::now();
    let bracketed_ids: Vec<String> = records.iter().map(|record| record.id.bracketed()).collect();
    let concept_lines: Vec<(String, String)> = records
        .iter()
        .map(|record| (record.id.bracketed(), record.concept.description.clone()))
        .collect();
    let max_tokens = state.limits.detect_max_tokens as usize;
    let location_chars = location_chars_within(&bracketed_ids, max_tokens).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "{} concepts do not fit in one cue set of at most {max_tokens} tokens \
             (SLC_DETECT_MAX_TOKENS); ask about fewer at once",
            bracketed_ids.len()
        ))
    })?;
    let adapter = choose_adapter(state, records, scenario);
    let request = GenerationRequest {
        messages: vec![
            PromptMessage {
                role: Role::System,
                content: vec![ContentPart::Text(TABLE6_SYSTEM_PROMPT.to_string())],
            },
            PromptMessage {
                role: Role::User,
                content: vec![
                    ContentPart::Image(PromptImage {
                        sha256: image.sha256.clone(),
                        rgb: image.rgb.clone(),
                    }),
                    ContentPart::Text(table6_user_text(&concept_lines)),
                ],
            },
        ],
        sampling: SamplingParams::greedy(
            cue_set_token_budget(&bracketed_ids, location_chars) as u32
        ),
        json_schema: Some(cue_set_schema(&bracketed_ids, location_chars)),
        adapter: adapter.as_ref().map(|selection| selection.name.clone()),
    };
    let output = state.workers.generate(request, deadline).await?;
    let cues = normalize_cue_set(&output.text, &bracketed_ids).map_err(|why| {
        state.metrics.invalid_model_outputs.inc();
        ApiError::InvalidModelOutput(why)
    })?;
    Ok(detect_response(cues, adapter, &output, started))
}

/// One grounding call per present concept, on the base model (grounding is Qwen2.5-VL's
/// own skill; the meta-concept adapters were trained on Table 6 only). A box the model's
/// output does not give is left out and counted as an invalid output; the cue stays.
async fn add_boxes(
    state: &AppState,
    image: &DecodedImage,
    records: &[ConceptRecord],
    cues: &mut shared_types::CueSet,
    usage: &mut Usage,
    deadline: Instant,
) -> Result<(), ApiError> {
    let rule = grounding_rule(state)?;
    let original = (image.rgb.width(), image.rgb.height());
    let Some(resized) = grounding::resized_size(rule, original.0, original.1) else {
        return Ok(());
    };
    for record in records {
        let id = record.id.bracketed();
        let Some(cue) = cues.get_mut(&id).filter(|cue| cue.present) else {
            continue;
        };
        let prompt_image = PromptImage {
            sha256: image.sha256.clone(),
            rgb: image.rgb.clone(),
        };
        let request = GenerationRequest {
            messages: grounding::grounding_messages(prompt_image, &id, &record.concept.description),
            sampling: SamplingParams::greedy(grounding::BOX_MAX_TOKENS),
            json_schema: Some(grounding::box_schema(resized)),
            adapter: None,
        };
        let output = state.workers.generate(request, deadline).await?;
        usage.prompt_tokens += output.usage.prompt_tokens;
        usage.completion_tokens += output.usage.completion_tokens;
        usage.decode_steps += output.usage.decode_steps;
        match grounding::original_box(&output.text, resized, original) {
            Ok(bbox) => cue.bbox = Some(bbox),
            Err(why) => {
                state.metrics.invalid_model_outputs.inc();
                tracing::warn!(concept = %id, %why, "no box from the grounding output");
            }
        }
    }
    Ok(())
}

/// The model's resize rule, which boxes are mapped through; a request for boxes on a model
/// without one is refused before any work.
pub fn grounding_rule(state: &AppState) -> Result<crate::model::ResizeRule, ApiError> {
    state.workers.catalog().resize_rule.ok_or_else(|| {
        ApiError::InvalidRequest(
            "this edge's model cannot ground boxes; ask without `boxes`".into(),
        )
    })
}

/// Eq. 1's adapter for a detection, counted in `/metrics`; a scenario's from its cache.
fn choose_adapter(
    state: &AppState,
    records: &[ConceptRecord],
    scenario: Option<&ScenarioRecord>,
) -> Option<AdapterSelection> {
    let selection = match scenario {
        Some(scenario) => {
            // Scenario ids are unique per tenant only.
            let key = format!("{}/{}", scenario.tenant.as_str(), scenario.id.bare());
            let (selection, cached) =
                state
                    .scenario_adapters
                    .get_or_compute(&key, scenario.scenario.revision, || {
                        eq1_adapter(state, records)
                    });
            let source = if cached { "cache" } else { "computed" };
            state
                .metrics
                .scenario_adapter_choices
                .with_label_values(&[source])
                .inc();
            selection
        }
        None => eq1_adapter(state, records),
    }?;
    state
        .metrics
        .adapter_selections
        .with_label_values(&[selection.name.as_str()])
        .inc();
    Some(selection)
}

/// Eq. 1's adapter for these concepts, when their embeddings allow one and it is loaded.
pub fn eq1_adapter(state: &AppState, records: &[ConceptRecord]) -> Option<AdapterSelection> {
    let catalog = state.workers.catalog();
    // Embeddings from another CLIP model live in another space: no adapter choice from them
    // (re-register the concept, or PUT its images, to re-embed it).
    let same_clip = records
        .iter()
        .all(|record| record.clip_model == catalog.clip_model);
    if !same_clip {
        tracing::warn!(clip = %catalog.clip_model, "concepts embedded with another CLIP model; using the base model");
        return None;
    }
    let embeddings: Vec<Vec<f32>> = records.iter().map(|r| r.embedding.clone()).collect();
    // Eq. 1: the plain mean of the concept embeddings (each already a mean of normalized
    // image embeddings), not a mean of re-normalized ones.
    let scenario = slc_engine::lora::scenario_embedding(&embeddings).ok()?;
    let selection = state.adapter_chooser.choose(&scenario)?;
    // A dictionary entry whose adapter the model did not load is a deployment mistake;
    // detect with the base model rather than fail the user's request.
    if let Err(why) = AdapterMix::parse(&selection.name, &catalog.adapters) {
        tracing::warn!(adapter = %selection.name, %why, "chosen adapter is not loaded");
        return None;
    }
    Some(selection)
}

fn detect_response(
    cues: shared_types::CueSet,
    adapter: Option<AdapterSelection>,
    output: &GenerationOutput,
    started: Instant,
) -> DetectResponse {
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let model_ms = output.timings.vision_ms + output.timings.prefill_ms + output.timings.decode_ms;
    DetectResponse {
        cues,
        adapter: adapter.map(|selection| AdapterChoice {
            name: selection.name,
            similarity: selection.similarity,
        }),
        concept_adapters: None,
        usage: Usage {
            prompt_tokens: output.usage.prompt_tokens,
            completion_tokens: output.usage.completion_tokens,
            decode_steps: output.usage.decode_steps,
        },
        timings: Timings {
            queue_ms: (total_ms - model_ms).max(0.0),
            vision_ms: output.timings.vision_ms,
            prefill_ms: output.timings.prefill_ms,
            decode_ms: output.timings.decode_ms,
            total_ms,
        },
    }
}

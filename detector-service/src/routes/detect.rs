//! `POST /v1/detect`: the small model's cue set for a query image and registered concepts.

use std::time::Instant;

use axum::extract::State;
use shared_types::{AdapterChoice, DetectRequest, DetectResponse, ErrorBody, Timings, Usage};

use crate::detection::{
    TABLE6_SYSTEM_PROMPT, bare_concept_id, cue_set_schema, cue_set_token_budget,
    location_chars_within, normalize_cue_set, table6_user_text,
};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::images::{DecodedImage, decode_base64_image};
use crate::model::{
    ContentPart, GenerationRequest, PromptImage, PromptMessage, Role, SamplingParams,
};
use crate::registry::ConceptRecord;
use crate::state::AppState;

/// Detect registered concepts in an image (paper Table 6).
#[utoipa::path(
    post,
    path = "/v1/detect",
    tag = "detection",
    request_body(content = DetectRequest, example = json!({
        "image": "data:image/jpeg;base64,/9j/4AAQSkZJRg...",
        "concepts": ["bo", "<mam>"]
    })),
    responses(
        (status = 200, body = DetectResponse, example = json!({
            "cues": {
                "<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"},
                "<mam>": {"present": false}
            },
            "adapter": {"name": "meta-3", "similarity": 0.82},
            "usage": {"prompt_tokens": 412, "completion_tokens": 38, "decode_steps": 17},
            "timings": {"queue_ms": 0.4, "vision_ms": 310.0, "prefill_ms": 520.0, "decode_ms": 900.0, "total_ms": 1731.0}
        })),
        (status = 400, description = "Invalid image or concept list", body = ErrorBody),
        (status = 404, description = "Unknown concept ids", body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 429, description = "Model queue full", body = ErrorBody),
        (status = 504, description = "Deadline passed", body = ErrorBody),
    )
)]
pub async fn detect(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DetectRequest>,
) -> Result<axum::Json<DetectResponse>, ApiError> {
    let records = resolve_concepts(&state, &request.concepts, false).await?;
    let image = decode_base64_image(&request.image, state.limits.image, "image")?;
    let detection = run_detection(&state, &image, &records).await?;
    Ok(axum::Json(detection))
}

/// Validates a request's concept list and loads the records in order; unknown ids → 404
/// naming all of them.
pub async fn resolve_concepts(
    state: &AppState,
    raw_ids: &[String],
    allow_empty: bool,
) -> Result<Vec<ConceptRecord>, ApiError> {
    if raw_ids.is_empty() && !allow_empty {
        return Err(ApiError::InvalidRequest(
            "the concept list is empty; name at least one registered concept".into(),
        ));
    }
    if raw_ids.len() > state.limits.max_concepts_per_request {
        return Err(ApiError::TooMany {
            what: "concepts",
            count: raw_ids.len(),
            max: state.limits.max_concepts_per_request,
        });
    }
    let mut ids = Vec::with_capacity(raw_ids.len());
    for raw in raw_ids {
        let id = bare_concept_id(raw).map_err(ApiError::InvalidRequest)?;
        if ids.contains(&id) {
            return Err(ApiError::InvalidRequest(format!(
                "concept <{id}> is listed twice"
            )));
        }
        ids.push(id);
    }
    state.registry.get_many(&ids).await?.map_err(|missing| {
        ApiError::UnknownConcepts(missing.iter().map(|id| format!("<{id}>")).collect())
    })
}

/// Runs the Table 6 detection on a worker, constrained by the cue-set schema for exactly
/// these concepts, with the adapter chosen from their embeddings.
pub async fn run_detection(
    state: &AppState,
    image: &DecodedImage,
    records: &[ConceptRecord],
) -> Result<DetectResponse, ApiError> {
    let started = Instant::now();
    let bracketed_ids: Vec<String> = records
        .iter()
        .map(|record| format!("<{}>", record.concept.id))
        .collect();
    let concept_lines: Vec<(String, String)> = records
        .iter()
        .map(|record| {
            (
                format!("<{}>", record.concept.id),
                record.concept.description.clone(),
            )
        })
        .collect();
    let max_tokens = state.limits.detect_max_tokens as usize;
    let location_chars = location_chars_within(&bracketed_ids, max_tokens).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "{} concepts do not fit in one cue set of at most {max_tokens} tokens \
             (SLC_DETECT_MAX_TOKENS); ask about fewer at once",
            bracketed_ids.len()
        ))
    })?;
    let embeddings: Vec<Vec<f32>> = records.iter().map(|r| r.embedding.clone()).collect();
    let catalog = state.workers.catalog();
    let loaded_adapters = catalog.adapters;
    // Embeddings from another CLIP model live in another space: no adapter choice from them
    // (re-register the concept, or PUT its images, to re-embed it).
    let same_clip = records
        .iter()
        .all(|record| record.clip_model == catalog.clip_model);
    if !same_clip {
        tracing::warn!(clip = %catalog.clip_model, "concepts embedded with another CLIP model; using the base model");
    }
    let adapter = Some(embeddings)
        .filter(|_| same_clip)
        // Eq. 1: the plain mean of the concept embeddings (each already a mean of normalized
        // image embeddings), not a mean of re-normalized ones.
        .and_then(|embeddings| slc_engine::lora::scenario_embedding(&embeddings).ok())
        .and_then(|scenario| state.adapter_chooser.choose(&scenario))
        .filter(|selection| {
            // A dictionary entry whose adapter the model did not load is a deployment
            // mistake; detect with the base model rather than fail the user's request.
            let loaded = crate::embedding::adapter_members(&selection.name)
                .iter()
                .all(|member| loaded_adapters.iter().any(|name| name == member));
            if !loaded {
                tracing::warn!(adapter = %selection.name, "chosen adapter is not loaded");
            }
            loaded
        });
    if let Some(selection) = &adapter {
        state
            .metrics
            .adapter_selections
            .with_label_values(&[selection.name.as_str()])
            .inc();
    }
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
    let output = state.workers.generate(request, state.deadline()).await?;
    let cues = normalize_cue_set(&output.text, &bracketed_ids).map_err(|why| {
        state.metrics.invalid_model_outputs.inc();
        ApiError::InvalidModelOutput(why)
    })?;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let model_ms = output.timings.vision_ms + output.timings.prefill_ms + output.timings.decode_ms;
    Ok(DetectResponse {
        cues,
        adapter: adapter.map(|selection| AdapterChoice {
            name: selection.name,
            similarity: selection.similarity,
        }),
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
    })
}

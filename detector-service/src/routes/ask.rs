//! `POST /v1/ask`, the app's entry point: local detection, then the cloud reasoner with only
//! what may cross the boundary (query image, question, ids + descriptions, cues), then the
//! answer with the full trace.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use shared_types::{
    AskFailure, AskRequest, AskResponse, AskTimings, ConceptDescription, CueSet, DetectResponse,
    ErrorBody, Mode, ReasonOptions, ReasonRequest, ReasonResponse,
};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::images::decode_base64_image;
use crate::pseudonyms::Pseudonyms;
use crate::reasoner_client::ReasonerError;
use crate::routes::detect::{resolve_concepts, run_detection};
use crate::state::AppState;

/// Ask a question about a photo (or text only) with personal concepts.
#[utoipa::path(
    post,
    path = "/v1/ask",
    tag = "ask",
    request_body(content = AskRequest, example = json!({
        "image": "data:image/jpeg;base64,/9j/4AAQSkZJRg...",
        "question": "What is <bo> doing?",
        "concepts": ["bo"],
        "mode": "full",
        "pseudonymize": true
    })),
    responses(
        (status = 200, description = "The answer with its trace; with `stream: true`, server-sent events `detection`, `answer`, `done` (an AskResponse) or `error` (an AskFailure)", body = AskResponse),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown concept ids", body = ErrorBody),
        (status = 502, description = "The reasoner is unreachable or failed; the local detection is in the body", body = AskFailure),
        (status = 504, description = "The reasoner timed out; the local detection is in the body", body = AskFailure),
    )
)]
pub async fn ask(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    let request_id = headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let prepared = prepare(&state, request).await?;
    if prepared.stream {
        let (events, receiver) = mpsc::channel(8);
        tokio::spawn(async move {
            let result = run_turn(&state, prepared, request_id.as_deref(), Some(&events)).await;
            let event = match result {
                Ok(response) => json_event("done", &response),
                Err((error, detection)) => json_event(
                    "error",
                    &AskFailure {
                        error: error.detail(),
                        detection: detection.map(|boxed| *boxed),
                    },
                ),
            };
            let _ = events.send(event).await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok::<_, Infallible>);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    match run_turn(&state, prepared, request_id.as_deref(), None).await {
        Ok(response) => Ok(axum::Json(response).into_response()),
        Err((error, _)) => Err(error),
    }
}

struct PreparedTurn {
    question: String,
    image: Option<crate::images::DecodedImage>,
    records: Vec<crate::registry::ConceptRecord>,
    mode: Mode,
    pseudonymize: bool,
    batched_verification: bool,
    stream: bool,
    max_answer_tokens: Option<u32>,
}

async fn prepare(state: &AppState, request: AskRequest) -> Result<PreparedTurn, ApiError> {
    let question = request.question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::InvalidRequest("the question is empty".into()));
    }
    let records = resolve_concepts(state, &request.concepts, true).await?;
    let image = match &request.image {
        Some(image) => Some(decode_base64_image(image, state.limits.image, "image")?),
        None => None,
    };
    Ok(PreparedTurn {
        question,
        image,
        records,
        mode: request.mode,
        pseudonymize: request.pseudonymize,
        batched_verification: request.batched_verification,
        stream: request.stream,
        max_answer_tokens: request.max_answer_tokens,
    })
}

fn json_event<T: serde::Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name))
}

type TurnError = (ApiError, Option<Box<DetectResponse>>);

async fn run_turn(
    state: &AppState,
    turn: PreparedTurn,
    request_id: Option<&str>,
    events: Option<&mpsc::Sender<Event>>,
) -> Result<AskResponse, TurnError> {
    let started = Instant::now();
    let detects = turn.image.is_some()
        && !turn.records.is_empty()
        && matches!(turn.mode, Mode::Full | Mode::NoReflection);
    let detection = match (&turn.image, detects) {
        (Some(image), true) => Some(
            run_detection(state, image, &turn.records)
                .await
                .map_err(|error| (error, None))?,
        ),
        _ => None,
    };
    let detect_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let (Some(events), Some(detection)) = (events, &detection) {
        let _ = events.send(json_event("detection", detection)).await;
    }
    if events.is_some_and(|events| events.is_closed()) {
        // The streaming client left: spare the cloud a turn nobody will read.
        return Err((ApiError::Internal("the client went away".into()), None));
    }

    let bracketed_ids: Vec<String> = turn
        .records
        .iter()
        .map(|record| format!("<{}>", record.concept.id))
        .collect();
    let names = if turn.pseudonymize {
        Pseudonyms::new(&bracketed_ids)
    } else {
        Pseudonyms::identity()
    };
    let reason_request = ReasonRequest {
        image: turn.image.as_ref().map(|image| image.data_url()),
        question: names.hide(&turn.question),
        concepts: turn
            .records
            .iter()
            .map(|record| ConceptDescription {
                id: names.hide(&format!("<{}>", record.concept.id)),
                description: names.hide(&record.concept.description),
            })
            .collect(),
        cues: detection
            .as_ref()
            .map(|detection| hide_cues(&names, &detection.cues)),
        mode: turn.mode,
        options: ReasonOptions {
            batched_verification: turn.batched_verification,
            max_answer_tokens: turn.max_answer_tokens,
        },
    };
    let reasoned = state.reasoner.reason(&reason_request, request_id).await;
    let (reasoning, reason_ms) = match reasoned {
        Ok(ok) => ok,
        Err(error) => {
            let (timeout, kind) = match &error {
                ReasonerError::Timeout(_) => (true, "upstream_timeout"),
                ReasonerError::Unreachable { .. } => (false, "upstream_unreachable"),
                ReasonerError::Upstream { .. } => (false, "upstream_error"),
                ReasonerError::InvalidResponse(_) => (false, "upstream_invalid_response"),
            };
            let detection = detection.map(Box::new);
            return Err((
                ApiError::Upstream {
                    timeout,
                    kind,
                    message: error.to_string(),
                    detection: detection.clone(),
                },
                detection,
            ));
        }
    };
    let reasoning = reveal_reasoning(&names, reasoning);
    if let Some(events) = events {
        let _ = events
            .send(
                Event::default()
                    .event("answer")
                    .data(reasoning.answer.clone()),
            )
            .await;
    }
    Ok(AskResponse {
        answer: reasoning.answer.clone(),
        mode: turn.mode,
        raw_cues: detection.as_ref().map(|detection| detection.cues.clone()),
        detection,
        reasoning,
        timings: AskTimings {
            detect_ms,
            reason_ms,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
    })
}

fn hide_cues(names: &Pseudonyms, cues: &CueSet) -> CueSet {
    cues.iter()
        .map(|(id, cue)| {
            let mut cue = cue.clone();
            cue.location_absolute = cue.location_absolute.map(|text| names.hide(&text));
            cue.location_relative = cue.location_relative.map(|text| names.hide(&text));
            (names.hide(id), cue)
        })
        .collect()
}

fn reveal_keys<V>(names: &Pseudonyms, map: BTreeMap<String, V>) -> BTreeMap<String, V> {
    map.into_iter()
        .map(|(key, value)| (names.reveal(&key), value))
        .collect()
}

/// Maps aliases back to the real ids everywhere in the reasoner's trace.
fn reveal_reasoning(names: &Pseudonyms, mut reasoning: ReasonResponse) -> ReasonResponse {
    reasoning.answer = names.reveal(&reasoning.answer);
    reasoning.refined_cues = reasoning.refined_cues.map(|cues| {
        cues.into_iter()
            .map(|(id, mut cue)| {
                cue.location_absolute = cue.location_absolute.map(|text| names.reveal(&text));
                cue.location_relative = cue.location_relative.map(|text| names.reveal(&text));
                (names.reveal(&id), cue)
            })
            .collect()
    });
    reasoning.identities = reveal_keys(names, reasoning.identities)
        .into_iter()
        .map(|(id, mut identity)| {
            identity.category = names.reveal(&identity.category);
            identity.attributes = names.reveal(&identity.attributes);
            (id, identity)
        })
        .collect();
    reasoning.actions = reveal_keys(names, reasoning.actions);
    for verification in &mut reasoning.verifications {
        verification.concept = names.reveal(&verification.concept);
        verification.question = names.reveal(&verification.question);
        verification.raw_answer = names.reveal(&verification.raw_answer);
    }
    reasoning
}

//! `POST /v1/ask`, the app's entry point: local detection, then the cloud reasoner with only
//! what may cross the boundary (query image, question, ids + descriptions, cues), then the
//! answer with the full trace.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use shared_types::limits::{MAX_ANSWER_TOKENS, MAX_QUESTION_CHARS};
use shared_types::{
    AskFailure, AskRequest, AskResponse, AskTimings, ConceptDescription, DetectResponse,
    EVENT_DETECTION, EVENT_DONE, ErrorBody, Mode, REQUEST_ID_HEADER, ReasonOptions, ReasonRequest,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::pseudonyms::Pseudonyms;
use crate::reasoner_client::CallTags;
use crate::routes::ask_conversation::{self, ConversationContext, FinishedTurn};
use crate::routes::ask_stream::reason_streamed;
use crate::routes::detect::run_detection;
use crate::routes::turn_concepts::{ConceptsAsked, DefaultRule, TurnConcepts, choose_concepts};
use crate::state::AppState;
use crate::tenants::Scope;

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
        (status = 200, description = "The answer with its trace; with `stream: true`, server-sent events in order: `detection` (a DetectResponse, when detection ran), `verification` (a VerificationEvent: the refined cues, when reflection ran), `delta` (an AnswerDelta: the answer's next text, as the large model writes it), then `done` (an AskResponse) or `error` (an AskFailure)", body = AskResponse),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 400, description = "Neither `concepts` nor `scenario`, and more concepts registered than one turn may use (`concepts_required`)", body = ErrorBody),
        (status = 404, description = "Unknown concept ids (listed or mentioned as `<id>`), scenario (`unknown_scenario`) or conversation (`unknown_conversation`)", body = ErrorBody),
        (status = 413, description = "Body or image too large, a question over `shared_types::limits::MAX_QUESTION_CHARS`, or too many concepts", body = ErrorBody),
        (status = 422, description = "An empty question, `max_answer_tokens` out of range, a bad concept id or an undecodable image", body = ErrorBody),
        (status = 502, description = "The reasoner is unreachable or failed; the local detection is in the body", body = AskFailure),
        (status = 504, description = "The reasoner timed out; the local detection is in the body", body = AskFailure),
    )
)]
pub async fn ask(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let prepared = prepare(&state, scope, request).await?;
    if prepared.stream {
        let (events, receiver) = mpsc::channel(8);
        // The turn runs in the request's span, so its log lines (a failed reasoner call's
        // detail among them) carry the request id like the non-streaming path's.
        let turn = async move {
            let result = run_turn(&state, prepared, request_id.as_deref(), Some(&events)).await;
            let event = match result {
                Ok(response) => json_event(EVENT_DONE, &response),
                Err(error) => error.into_event(),
            };
            let _ = events.send(event).await;
        };
        tokio::spawn(turn.instrument(tracing::Span::current()));
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok::<_, Infallible>);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let response = run_turn(&state, prepared, request_id.as_deref(), None).await?;
    Ok(axum::Json(response).into_response())
}

struct PreparedTurn {
    question: String,
    image: Option<crate::images::DecodedImage>,
    records: Vec<crate::registry::ConceptRecord>,
    scenario: Option<crate::registry::ScenarioRecord>,
    conversation: Option<ConversationContext>,
    mode: Mode,
    pseudonymize: bool,
    batched_verification: bool,
    stream: bool,
    max_answer_tokens: Option<u32>,
    /// The tenant's registry, and the opaque value the reasoner's identity cache is
    /// partitioned by (the tenant's name never leaves the edge).
    scope: Scope,
    recheck_mentioned: bool,
    boxes: bool,
}

async fn prepare(
    state: &AppState,
    scope: Scope,
    request: AskRequest,
) -> Result<PreparedTurn, ApiError> {
    let question = request.question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::InvalidRequest("the question is empty".into()));
    }
    ApiError::check_length(
        "question_too_long",
        "the question",
        &question,
        MAX_QUESTION_CHARS,
    )?;
    if let Some(tokens) = request.max_answer_tokens
        && !(1..=MAX_ANSWER_TOKENS).contains(&tokens)
    {
        return Err(ApiError::InvalidRequest(format!(
            "max_answer_tokens must be between 1 and {MAX_ANSWER_TOKENS}"
        )));
    }
    if request.batched_verification
        && state.concept_isolation == crate::detection::ConceptIsolation::PerConcept
    {
        // One verification call for every concept would put their identities side by side,
        // which is what per-concept isolation promises not to do.
        return Err(ApiError::InvalidRequest(
            "batched_verification is not available on this edge: it isolates concepts \
             (SLC_CONCEPT_ISOLATION=per-concept), so each concept is verified on its own"
                .into(),
        ));
    }
    if request.boxes {
        crate::routes::detect::grounding_rule(state)?;
    }
    let conversation =
        ask_conversation::load(state, &scope.registry, request.conversation_id.as_deref()).await?;
    let in_scope = conversation
        .as_ref()
        .map_or(&[][..], |c| c.scope.as_slice());
    let asked = ConceptsAsked {
        concepts: request.concepts.as_deref(),
        scenario: request.scenario.as_deref(),
        default_rule: Some(DefaultRule {
            question: &question,
            scope: in_scope,
        }),
    };
    let TurnConcepts {
        records, scenario, ..
    } = choose_concepts(state, &scope.registry, asked).await?;
    let image = match &request.image {
        Some(image) => Some(state.images.base64(image, "image").await?),
        None => None,
    };
    Ok(PreparedTurn {
        question,
        image,
        records,
        scenario,
        conversation,
        mode: request.mode,
        pseudonymize: request.pseudonymize,
        batched_verification: request.batched_verification,
        stream: request.stream,
        max_answer_tokens: request.max_answer_tokens,
        scope,
        recheck_mentioned: request.recheck_mentioned,
        boxes: request.boxes,
    })
}

fn json_event<T: serde::Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name))
}

async fn run_turn(
    state: &AppState,
    turn: PreparedTurn,
    request_id: Option<&str>,
    events: Option<&mpsc::Sender<Event>>,
) -> Result<AskResponse, ApiError> {
    let started = Instant::now();
    let detection = detect_for(state, &turn).await?;
    let detect_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let (Some(events), Some(detection)) = (events, &detection) {
        let _ = events.send(json_event(EVENT_DETECTION, detection)).await;
    }
    if events.is_some_and(|events| events.is_closed()) {
        // The streaming client left: spare the cloud a turn nobody will read.
        return Err(ApiError::Internal("the client went away".into()));
    }

    let names = pseudonyms_for(&turn).await?;
    let image = match &turn.image {
        Some(image) => Some(image.cloud_data_url().await?),
        None => None,
    };
    let mut reason_request = reason_request(&turn, image, &names, detection.as_ref());
    reason_request.stream = events.is_some();
    let tags = CallTags {
        request_id,
        cache_partition: Some(turn.scope.cache_partition.as_str()),
    };
    let reasoned = match events {
        // A streaming client that leaves mid-turn cancels the cloud call: dropping it closes
        // the connection, and the reasoner's turn (and its large-model call) with it.
        Some(events) => tokio::select! {
            reasoned = reason_streamed(state, &reason_request, tags, &names, events, started, detection.as_ref()) => reasoned,
            () = events.closed() => {
                tracing::debug!("the streaming client left; the reasoner call is cancelled");
                return Err(ApiError::Internal("the client went away".into()));
            }
        },
        None => state
            .reasoner
            .reason(&reason_request, tags)
            .await
            .map(|(reasoning, reason_ms)| (reasoning, reason_ms, None)),
    };
    let (reasoning, reason_ms, first_token_ms) = match reasoned {
        Ok(ok) => ok,
        Err(error) => return Err(ApiError::upstream(error, detection)),
    };
    let mut reasoning = names.reveal_reasoning(reasoning);
    if let (Some(refined), Some(detection)) = (&mut reasoning.refined_cues, &detection) {
        keep_boxes(refined, &detection.cues);
    }
    let mut response = AskResponse {
        answer: reasoning.answer.clone(),
        mode: turn.mode,
        raw_cues: detection.as_ref().map(|detection| detection.cues.clone()),
        detection,
        reasoning,
        timings: AskTimings {
            detect_ms,
            reason_ms,
            first_token_ms,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        conversation: None,
    };
    if let Some(context) = &turn.conversation {
        let finished = FinishedTurn {
            question: &turn.question,
            image_sha256: turn.image.as_ref().map(|image| image.sha256.clone()),
            records: &turn.records,
            scenario: turn.scenario.as_ref().map(|s| s.id.bare().to_owned()),
            names: turn.pseudonymize.then_some(&names),
        };
        response.conversation =
            ask_conversation::store(&turn.scope.registry, context, finished, &response).await?;
    }
    Ok(response)
}

/// The local detection, when the turn's mode runs one and it has an image and concepts.
async fn detect_for(
    state: &AppState,
    turn: &PreparedTurn,
) -> Result<Option<DetectResponse>, ApiError> {
    let detects = !turn.records.is_empty() && matches!(turn.mode, Mode::Full | Mode::NoReflection);
    match &turn.image {
        Some(image) if detects => Ok(Some(
            run_detection(
                state,
                image,
                &turn.records,
                turn.scenario.as_ref(),
                turn.boxes,
            )
            .await?,
        )),
        _ => Ok(None),
    }
}

/// The turn's pseudonyms (or none): every registered id, not only the turn's, since a
/// description may mention another concept and no real id may reach the cloud.
async fn pseudonyms_for(turn: &PreparedTurn) -> Result<Pseudonyms, ApiError> {
    if !turn.pseudonymize {
        return Ok(Pseudonyms::identity());
    }
    let registered = turn.scope.registry.ids().await?;
    Ok(
        ask_conversation::pseudonyms(turn.conversation.as_ref(), &turn.records)
            .also_hiding(&registered),
    )
}

/// The Table 6 cue set: boxes stay on the edge.
fn without_boxes(cues: &shared_types::CueSet) -> shared_types::CueSet {
    let mut cues = cues.clone();
    for cue in cues.values_mut() {
        cue.bbox = None;
    }
    cues
}

/// The edge's boxes back on the refined cues of concepts reflection kept present.
pub(crate) fn keep_boxes(refined: &mut shared_types::CueSet, raw: &shared_types::CueSet) {
    for (id, cue) in refined.iter_mut() {
        if cue.present {
            cue.bbox = raw.get(id).and_then(|raw| raw.bbox);
        }
    }
}

/// What crosses to the cloud: the re-encoded image (`image`), the question, the turn's ids and
/// descriptions and the cues, all under the pseudonyms.
fn reason_request(
    turn: &PreparedTurn,
    image: Option<String>,
    names: &Pseudonyms,
    detection: Option<&DetectResponse>,
) -> ReasonRequest {
    ReasonRequest {
        image,
        question: names.hide(&turn.question),
        concepts: turn
            .records
            .iter()
            .map(|record| ConceptDescription {
                id: names.hide(&record.id.bracketed()),
                description: names.hide(&record.concept.description),
            })
            .collect(),
        cues: detection.map(|detection| names.hide_cues(&without_boxes(&detection.cues))),
        mode: turn.mode,
        options: ReasonOptions {
            batched_verification: turn.batched_verification,
            max_answer_tokens: turn.max_answer_tokens,
            recheck_mentioned: turn.recheck_mentioned,
        },
        stream: false,
        history: ask_conversation::history(turn.conversation.as_ref(), names),
    }
}

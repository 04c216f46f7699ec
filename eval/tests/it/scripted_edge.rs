//! A real HTTP edge on loopback that speaks the shared-types contract for
//! `/v1/concepts` and `/v1/ask`, answers from a script, and records what it was sent.
//! It stands in for the real `slc-detector` until that serves `/v1/ask`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use sha2::{Digest, Sha256};
use shared_types::{
    AskRequest, AskResponse, AskTimings, Concept, ConceptImage, CreateConcept, Cue, ErrorBody,
    ErrorDetail, Mode, ReasonResponse, UpdateConcept,
};
use slc_eval::options::split_choices;

#[derive(Default)]
pub struct EdgeState {
    pub concepts: BTreeMap<String, Concept>,
    pub created: Vec<CreateConcept>,
    pub updated: Vec<(String, UpdateConcept)>,
    pub asks: Vec<AskRequest>,
    /// [`truth_key`] → the correct option's text, so answers can be right after shuffling.
    pub truths: HashMap<String, String>,
    /// SHA-256 of the images that contain the concept asked about.
    pub positive_images: HashSet<String>,
    /// Questions containing one of these fail with a 503 the first time they are asked in
    /// mode `full`.
    pub fail_once: HashSet<String>,
    /// How long each `/v1/ask` takes, so concurrent requests overlap.
    pub ask_delay: Duration,
}

/// Requests inside `/v1/ask` right now, and the most there ever were.
#[derive(Default)]
pub struct InFlight {
    pub now: AtomicUsize,
    pub most: AtomicUsize,
}

#[derive(Clone)]
struct AppState {
    edge: Arc<Mutex<EdgeState>>,
    in_flight: Arc<InFlight>,
}

/// Stem, options in any order, and the image: several items share a stem ("Does <bo> have
/// its tongue out in this image?") with different images and answers.
pub fn truth_key(stem: &str, options: &[String], image_sha256: Option<&str>) -> String {
    let mut sorted = options.to_vec();
    sorted.sort();
    format!(
        "{stem}\u{0}{}\u{0}{}",
        sorted.join("\u{1}"),
        image_sha256.unwrap_or("")
    )
}

pub struct ScriptedEdge {
    pub url: String,
    pub state: Arc<Mutex<EdgeState>>,
    pub in_flight: Arc<InFlight>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            kind: kind.to_string(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

fn decode(image: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(image)
        .expect("the harness sends plain base64")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn concept_record(id: &str, description: &str, images: &[String]) -> Concept {
    Concept {
        id: id.to_string(),
        description: description.to_string(),
        images: images
            .iter()
            .enumerate()
            .map(|(index, image)| ConceptImage {
                index: index as u32,
                sha256: sha256_hex(&decode(image)),
                width: 1,
                height: 1,
                content_type: "image/jpeg".into(),
            })
            .collect(),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        adapter: None,
    }
}

async fn get_concept(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.edge.lock().unwrap().concepts.get(&id) {
        Some(concept) => Json(concept.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_concept",
            format!("unknown concept ids: <{id}>"),
        ),
    }
}

async fn create_concept(
    State(state): State<AppState>,
    Json(body): Json<CreateConcept>,
) -> Response {
    let mut state = state.edge.lock().unwrap();
    if state.concepts.contains_key(&body.id) {
        return error(StatusCode::CONFLICT, "concept_exists", body.id);
    }
    let record = concept_record(&body.id, &body.description, &body.images);
    state.concepts.insert(body.id.clone(), record.clone());
    state.created.push(body);
    (StatusCode::CREATED, Json(record)).into_response()
}

async fn update_concept(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<UpdateConcept>,
) -> Response {
    let mut state = state.edge.lock().unwrap();
    if !state.concepts.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "unknown_concept", id);
    }
    let record = concept_record(
        &id,
        &body.description,
        body.images.as_deref().unwrap_or(&[]),
    );
    state.concepts.insert(id.clone(), record.clone());
    state.updated.push((id, body));
    Json(record).into_response()
}

fn reasoning(answer: &str, mode: Mode, cues: Option<shared_types::CueSet>) -> ReasonResponse {
    ReasonResponse {
        answer: answer.to_string(),
        mode,
        refined_cues: cues,
        identities: BTreeMap::new(),
        verifications: vec![],
        actions: BTreeMap::new(),
        upstream: Default::default(),
        timings: Default::default(),
        history: None,
    }
}

async fn ask(State(app): State<AppState>, Json(request): Json<AskRequest>) -> Response {
    let now = app.in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
    app.in_flight.most.fetch_max(now, Ordering::SeqCst);
    let delay = app.edge.lock().unwrap().ask_delay;
    tokio::time::sleep(delay).await;
    let response = answer(&app.edge, request);
    app.in_flight.now.fetch_sub(1, Ordering::SeqCst);
    response
}

fn answer(state: &Mutex<EdgeState>, request: AskRequest) -> Response {
    let mut state = state.lock().unwrap();
    state.asks.push(request.clone());
    let unknown: Vec<&String> = request
        .concepts
        .iter()
        .flatten()
        .filter(|c| !state.concepts.contains_key(c.trim_matches(['<', '>'])))
        .collect();
    if !unknown.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_concept",
            format!("unknown concept ids: {unknown:?}"),
        );
    }
    let marker = state
        .fail_once
        .iter()
        .find(|m| request.mode == Mode::Full && request.question.contains(m.as_str()))
        .cloned();
    if let Some(marker) = marker {
        state.fail_once.remove(&marker);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_timeout",
            "scripted failure".into(),
        );
    }
    let first_line = request.question.lines().next().unwrap_or("");
    let mut cues = None;
    let answer = if first_line.starts_with("Is <") && split_choices(first_line).is_none() {
        let present = request
            .image
            .as_deref()
            .is_some_and(|image| state.positive_images.contains(&sha256_hex(&decode(image))));
        let concept = format!(
            "<{}>",
            request.concepts.as_deref().unwrap_or_default()[0].trim_matches(['<', '>'])
        );
        cues = Some(BTreeMap::from([(
            concept.clone(),
            Cue {
                present,
                ..Default::default()
            },
        )]));
        match (request.mode, present) {
            (Mode::Pure, _) => "I don't know.".to_string(),
            (_, true) => "Yes.".to_string(),
            (_, false) => format!("No, {concept} is not in this image."),
        }
    } else {
        match (request.mode, split_choices(first_line)) {
            (Mode::Pure, _) => "A".to_string(),
            (_, Some((stem, options))) => {
                let image = request.image.as_deref().map(|i| sha256_hex(&decode(i)));
                match state
                    .truths
                    .get(&truth_key(&stem, &options, image.as_deref()))
                {
                    Some(truth) => {
                        let index = options
                            .iter()
                            .position(|o| o == truth)
                            .expect("the right option is shown");
                        format!("{}. {}", (b'A' + index as u8) as char, truth)
                    }
                    None => "I cannot tell.".to_string(),
                }
            }
            (_, None) => "I cannot tell.".to_string(),
        }
    };
    let response = AskResponse {
        answer: answer.clone(),
        mode: request.mode,
        raw_cues: cues
            .clone()
            .filter(|_| matches!(request.mode, Mode::Full | Mode::NoReflection)),
        detection: None,
        reasoning: reasoning(&answer, request.mode, cues),
        timings: AskTimings {
            detect_ms: 1.0,
            reason_ms: 1.0,
            first_token_ms: None,
            total_ms: 2.0,
        },
        conversation: None,
    };
    Json(response).into_response()
}

pub async fn spawn_scripted_edge(state: EdgeState) -> ScriptedEdge {
    let state = Arc::new(Mutex::new(state));
    let in_flight = Arc::new(InFlight::default());
    let app = Router::new()
        .route("/v1/concepts", post(create_concept))
        .route("/v1/concepts/{id}", get(get_concept).put(update_concept))
        .route("/v1/ask", post(ask))
        .with_state(AppState {
            edge: state.clone(),
            in_flight: in_flight.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, receiver) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = receiver.await;
            })
            .await
            .unwrap();
    });
    ScriptedEdge {
        url,
        state,
        in_flight,
        _shutdown: shutdown,
    }
}

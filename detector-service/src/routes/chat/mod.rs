//! `POST /v1/chat/completions` and `GET /v1/models`: the OpenAI-compatible face of the edge
//! model, so that the reasoner can use it as its large model in a fully local setup.

mod request;
mod stream;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use shared_types::ErrorBody;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::model::{FinishReason, GenerationOutput};
use crate::openai_types::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest, CompletionUsage,
    ModelCard, ModelList,
};
use crate::state::AppState;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The base model and every adapter, each usable as `model`.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 503, body = ErrorBody)))]
pub async fn list_models(State(state): State<AppState>) -> Result<axum::Json<ModelList>, ApiError> {
    state
        .workers
        .readiness()
        .map_err(ApiError::ModelUnavailable)?;
    let catalog = state.workers.catalog();
    let created = unix_now();
    let data = std::iter::once(catalog.base_model.clone())
        .chain(catalog.adapters.iter().cloned())
        .map(|id| ModelCard {
            id,
            object: "model".into(),
            created,
            owned_by: "slc-edge".into(),
        })
        .collect();
    Ok(axum::Json(ModelList {
        object: "list".into(),
        data,
    }))
}

/// Chat completions (OpenAI-compatible subset: text and data-URI images, sampling options,
/// JSON-schema output, streaming).
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = ChatCompletionRequest, example = json!({
        "model": "Qwen2.5-VL-3B-Instruct",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg..."}},
                {"type": "text", "text": "Is there a dog in the image? Answer yes or no."}
            ]}
        ],
        "max_tokens": 16,
        "temperature": 0
    })),
    responses(
        (status = 200, description = "A completion, or with `stream: true` server-sent `chat.completion.chunk` events ending in `[DONE]`", body = ChatCompletion),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body or image too large, or more images than `SLC_MAX_CHAT_IMAGES`", body = ErrorBody),
        (status = 422, description = "Invalid options, messages, adapter mix or image", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, description = "The model is not loaded yet", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    state
        .workers
        .readiness()
        .map_err(ApiError::ModelUnavailable)?;
    let (generation, images) = request::to_generation_request(&state, &request).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model = request.model.clone();
    if !request.stream {
        let output = state.workers.generate(generation, state.deadline()).await?;
        drop(images);
        return Ok(axum::Json(ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: output.text.clone(),
                },
                finish_reason: finish_reason(output.finish_reason).into(),
            }],
            usage: usage_of(&output),
        })
        .into_response());
    }
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|options| options.include_usage);
    let streaming = state
        .workers
        .generate_streaming(generation, state.deadline())?;
    let chunks = stream::ChunkMaker { id, created, model };
    Ok(
        stream::completion_events(chunks, streaming, state.deadline(), include_usage, images)
            .into_response(),
    )
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::Cancelled => "stop",
    }
}

fn usage_of(output: &GenerationOutput) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: output.usage.prompt_tokens,
        completion_tokens: output.usage.completion_tokens,
        total_tokens: output.usage.prompt_tokens + output.usage.completion_tokens,
    }
}

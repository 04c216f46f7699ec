//! `POST /v1/chat/completions` and `GET /v1/models`: the OpenAI-compatible face of the edge
//! model, so that the reasoner can use it as its large model in a fully local setup.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use shared_types::ErrorBody;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::images::decode_base64_image;
use crate::model::{
    ContentPart, FinishReason, GenerationOutput, GenerationRequest, PromptImage, PromptMessage,
    Role, SamplingParams,
};
use crate::openai_types::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChunkChoice, ChunkDelta, CompletionUsage, ContentPartWire, MessageContent, ModelCard,
    ModelList, ResponseFormat, StopSequences,
};
use crate::state::AppState;

const DEFAULT_MAX_TOKENS: u32 = 512;
const MAX_MAX_TOKENS: u32 = 8192;

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
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 429, body = ErrorBody),
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
    let generation = to_generation_request(&state, &request)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model = request.model.clone();
    if !request.stream {
        let output = state.workers.generate(generation, state.deadline()).await?;
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
    let chunk = move |delta: ChunkDelta, finish: Option<String>, usage: Option<CompletionUsage>| {
        let choices = if usage.is_some() && finish.is_none() && delta.content.is_none() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }]
        };
        Event::default()
            .json_data(ChatCompletionChunk {
                id: id.clone(),
                object: "chat.completion.chunk".into(),
                created,
                model: model.clone(),
                choices,
                usage,
            })
            .unwrap_or_default()
    };
    let first = chunk(
        ChunkDelta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
        None,
    );
    let deadline = state.deadline();
    let pieces = tokio_stream::wrappers::UnboundedReceiverStream::new(streaming.pieces);
    let finished = streaming.finished;
    let chunk_for_pieces = chunk.clone();
    let content = pieces.map(move |piece| {
        chunk_for_pieces(
            ChunkDelta {
                role: None,
                content: Some(piece),
            },
            None,
            None,
        )
    });
    let tail = stream::once(async move {
        let mut events = Vec::new();
        match crate::workers::await_reply(finished, deadline).await {
            Ok(output) => {
                events.push(chunk(
                    ChunkDelta::default(),
                    Some(finish_reason(output.finish_reason).into()),
                    None,
                ));
                if include_usage {
                    events.push(chunk(ChunkDelta::default(), None, Some(usage_of(&output))));
                }
            }
            Err(error) => {
                let error: ApiError = error.into();
                events.push(
                    Event::default()
                        .event("error")
                        .json_data(ErrorBody {
                            error: error.detail(),
                        })
                        .unwrap_or_default(),
                );
            }
        }
        events.push(Event::default().data("[DONE]"));
        stream::iter(events)
    })
    .flatten();
    let all = stream::once(async move { first })
        .chain(content)
        .chain(tail)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(all)
        .keep_alive(KeepAlive::default())
        .into_response())
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

fn to_generation_request(
    state: &AppState,
    request: &ChatCompletionRequest,
) -> Result<GenerationRequest, ApiError> {
    let catalog = state.workers.catalog();
    let adapter = if request.model == catalog.base_model {
        None
    } else if crate::embedding::adapter_members(&request.model)
        .iter()
        .all(|member| catalog.adapters.iter().any(|name| name == member))
    {
        Some(request.model.clone())
    } else {
        return Err(ApiError::UnknownModel(request.model.clone()));
    };
    if request.n.unwrap_or(1) != 1 {
        return Err(ApiError::InvalidRequest("only n = 1 is supported".into()));
    }
    if request.messages.is_empty() {
        return Err(ApiError::InvalidRequest("messages is empty".into()));
    }
    let max_new_tokens = request
        .max_tokens
        .or(request.max_completion_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_MAX_TOKENS).contains(&max_new_tokens) {
        return Err(ApiError::InvalidRequest(format!(
            "max_tokens must be between 1 and {MAX_MAX_TOKENS}"
        )));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::InvalidRequest(
            "temperature must be between 0 and 2".into(),
        ));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::InvalidRequest("top_p must be in (0, 1]".into()));
    }
    let stop = match &request.stop {
        None => Vec::new(),
        Some(StopSequences::One(one)) => vec![one.clone()],
        Some(StopSequences::Many(many)) => many.clone(),
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::InvalidRequest(
            "stop takes at most 4 non-empty strings".into(),
        ));
    }
    let json_schema = match &request.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(serde_json::json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            if !json_schema.schema.is_object() {
                return Err(ApiError::InvalidRequest(
                    "response_format.json_schema.schema must be a JSON object".into(),
                ));
            }
            Some(json_schema.schema.clone())
        }
    };
    let mut messages = Vec::with_capacity(request.messages.len());
    let mut image_count = 0usize;
    for (index, message) in request.messages.iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "messages[{index}].role {other:?} is not supported"
                )));
            }
        };
        let content = match &message.content {
            MessageContent::Text(text) => vec![ContentPart::Text(text.clone())],
            MessageContent::Parts(parts) => {
                let mut content = Vec::with_capacity(parts.len());
                for (part_index, part) in parts.iter().enumerate() {
                    content.push(match part {
                        ContentPartWire::Text { text } => ContentPart::Text(text.clone()),
                        ContentPartWire::ImageUrl { image_url } => {
                            image_count += 1;
                            if image_count > state.limits.max_images_per_concept {
                                return Err(ApiError::TooMany {
                                    what: "images",
                                    count: image_count,
                                    max: state.limits.max_images_per_concept,
                                });
                            }
                            let image = decode_base64_image(
                                &image_url.url,
                                state.limits.image,
                                &format!("messages[{index}].content[{part_index}].image_url"),
                            )?;
                            ContentPart::Image(PromptImage {
                                sha256: image.sha256,
                                rgb: image.rgb,
                            })
                        }
                    });
                }
                content
            }
        };
        messages.push(PromptMessage { role, content });
    }
    Ok(GenerationRequest {
        messages,
        sampling: SamplingParams {
            max_new_tokens,
            temperature,
            top_p,
            seed: request.seed,
            stop,
        },
        json_schema,
        adapter,
    })
}

//! An OpenAI chat request → the worker's [`GenerationRequest`], in three steps: validate the
//! options, resolve `model` to the base model or an adapter mix, then decode the images. Every
//! check that needs no model runs here, on the request's task, before the request is queued:
//! the image count before any image is decoded, the adapter mix before a worker builds it.

use slc_engine::lora::{AdapterMix, AdapterNameError};

use crate::error::ApiError;
use crate::images::DecodedImage;
use crate::model::{
    ContentPart, GenerationRequest, PromptImage, PromptMessage, Role, SamplingParams,
};
use crate::openai_types::{
    ChatCompletionRequest, ContentPartWire, MessageContent, ResponseFormat, StopSequences,
};
use crate::state::AppState;
use crate::workers::ModelCatalog;

const DEFAULT_MAX_TOKENS: u32 = 512;
const MAX_MAX_TOKENS: u32 = 8192;
const MAX_STOP_SEQUENCES: usize = 4;
/// Every decoded piece is checked against each stop string; OpenAI allows no more either.
const MAX_STOP_CHARS: usize = 64;

/// The request for a worker, and its decoded images: keep them until the generation ends,
/// since they hold their share of the decode budget.
pub async fn to_generation_request(
    state: &AppState,
    request: &ChatCompletionRequest,
) -> Result<(GenerationRequest, Vec<DecodedImage>), ApiError> {
    let (sampling, json_schema) = validate(request)?;
    let adapter = resolve_model(&state.workers.catalog(), &request.model)?;
    let (messages, images) = decode_messages(request, state).await?;
    let generation = GenerationRequest {
        messages,
        sampling,
        json_schema,
        adapter,
    };
    Ok((generation, images))
}

/// The sampling options and the response schema, checked.
fn validate(
    request: &ChatCompletionRequest,
) -> Result<(SamplingParams, Option<serde_json::Value>), ApiError> {
    let invalid = |message: String| Err(ApiError::InvalidRequest(message));
    if request.n.unwrap_or(1) != 1 {
        return invalid("only n = 1 is supported".into());
    }
    if request.messages.is_empty() {
        return invalid("messages is empty".into());
    }
    let max_new_tokens = request
        .max_tokens
        .or(request.max_completion_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_MAX_TOKENS).contains(&max_new_tokens) {
        return invalid(format!("max_tokens must be between 1 and {MAX_MAX_TOKENS}"));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return invalid("temperature must be between 0 and 2".into());
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return invalid("top_p must be in (0, 1]".into());
    }
    let stop = match &request.stop {
        None => Vec::new(),
        Some(StopSequences::One(one)) => vec![one.clone()],
        Some(StopSequences::Many(many)) => many.clone(),
    };
    let bad_stop = |stop: &String| stop.is_empty() || stop.chars().nth(MAX_STOP_CHARS).is_some();
    if stop.len() > MAX_STOP_SEQUENCES || stop.iter().any(bad_stop) {
        return invalid(format!(
            "stop takes at most {MAX_STOP_SEQUENCES} non-empty strings of at most {MAX_STOP_CHARS} characters"
        ));
    }
    let json_schema = match &request.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(serde_json::json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema { json_schema }) if !json_schema.schema.is_object() => {
            return invalid("response_format.json_schema.schema must be a JSON object".into());
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(json_schema.schema.clone()),
    };
    let sampling = SamplingParams {
        max_new_tokens,
        temperature,
        top_p,
        seed: request.seed,
        stop,
    };
    Ok((sampling, json_schema))
}

/// `None` for the base model, else the canonical name of a validated adapter mix. The mix's
/// member bound is checked before the name is split (see `slc_engine::lora::mix`).
fn resolve_model(catalog: &ModelCatalog, model: &str) -> Result<Option<String>, ApiError> {
    if model == catalog.base_model {
        return Ok(None);
    }
    match AdapterMix::parse(model, &catalog.adapters) {
        Ok(mix) => Ok(Some(mix.name())),
        Err(AdapterNameError::Unknown { .. }) => Err(ApiError::UnknownModel(model.to_owned())),
        Err(too_many @ AdapterNameError::TooManyMembers { .. }) => {
            Err(ApiError::InvalidRequest(format!("model: {too_many}")))
        }
    }
}

/// The messages with their images decoded, after the image count is checked.
async fn decode_messages(
    request: &ChatCompletionRequest,
    state: &AppState,
) -> Result<(Vec<PromptMessage>, Vec<DecodedImage>), ApiError> {
    let limits = &state.limits;
    let images = request
        .messages
        .iter()
        .filter_map(|message| match &message.content {
            MessageContent::Parts(parts) => Some(parts),
            MessageContent::Text(_) => None,
        })
        .flatten()
        .filter(|part| matches!(part, ContentPartWire::ImageUrl { .. }))
        .count();
    if images > limits.max_chat_images {
        return Err(ApiError::TooMany {
            what: "images",
            count: images,
            max: limits.max_chat_images,
        });
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    let mut decoded = Vec::with_capacity(images);
    for (index, message) in request.messages.iter().enumerate() {
        let role = role_of(&message.role, index)?;
        let parts = match &message.content {
            MessageContent::Text(text) => vec![ContentPart::Text(text.clone())],
            MessageContent::Parts(parts) => {
                let mut content = Vec::with_capacity(parts.len());
                for (part_index, part) in parts.iter().enumerate() {
                    content.push(match part {
                        ContentPartWire::Text { text } => ContentPart::Text(text.clone()),
                        ContentPartWire::ImageUrl { image_url } => {
                            let what = format!("messages[{index}].content[{part_index}].image_url");
                            let image = state.images.base64(&image_url.url, &what).await?;
                            let part = ContentPart::Image(PromptImage {
                                sha256: image.sha256.clone(),
                                rgb: image.rgb.clone(),
                            });
                            decoded.push(image);
                            part
                        }
                    });
                }
                content
            }
        };
        messages.push(PromptMessage {
            role,
            content: parts,
        });
    }
    Ok((messages, decoded))
}

fn role_of(role: &str, index: usize) -> Result<Role, ApiError> {
    match role {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(ApiError::InvalidRequest(format!(
            "messages[{index}].role {other:?} is not supported"
        ))),
    }
}

#[cfg(test)]
mod proptests {
    //! The chat validator on arbitrary options: never panics, and accepts exactly the requests
    //! inside every documented range. `SLC_PROPTEST_CASES` sets the case count (10,000).
    use proptest::prelude::*;

    use super::*;
    use crate::openai_types::ChatMessage;
    use crate::proptests::config;

    fn float() -> impl Strategy<Value = Option<f32>> {
        proptest::option::of(prop_oneof![
            -3.0f32..3.0,
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(0.0),
            Just(1.0),
            Just(2.0),
        ])
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn the_validator_accepts_exactly_the_documented_ranges(
            max_tokens in proptest::option::of(0u32..10_000),
            temperature in float(),
            top_p in float(),
            n in proptest::option::of(0u32..3),
            stop in proptest::option::of(proptest::collection::vec("\\PC{0,70}", 0..6)),
            empty in any::<bool>(),
        ) {
            let messages = if empty {
                Vec::new()
            } else {
                vec![ChatMessage { role: "user".into(), content: MessageContent::Text("hi".into()), name: None }]
            };
            let request = ChatCompletionRequest {
                model: "m".into(),
                messages,
                max_tokens,
                max_completion_tokens: None,
                temperature,
                top_p,
                seed: None,
                stop: stop.clone().map(StopSequences::Many),
                response_format: None,
                stream: false,
                stream_options: None,
                n,
            };
            let valid = !empty
                && n.unwrap_or(1) == 1
                && (1..=MAX_MAX_TOKENS).contains(&max_tokens.unwrap_or(DEFAULT_MAX_TOKENS))
                && (0.0..=2.0).contains(&temperature.unwrap_or(1.0))
                && top_p.is_none_or(|p| p > 0.0 && p <= 1.0)
                && stop.as_ref().is_none_or(|stop| {
                    stop.len() <= MAX_STOP_SEQUENCES
                        && stop.iter().all(|s| !s.is_empty() && s.chars().count() <= MAX_STOP_CHARS)
                });
            match validate(&request) {
                Ok((sampling, _)) => {
                    prop_assert!(valid, "accepted {request:?}");
                    prop_assert!((1..=MAX_MAX_TOKENS).contains(&sampling.max_new_tokens));
                    prop_assert!(sampling.stop.len() <= MAX_STOP_SEQUENCES);
                }
                Err(error) => {
                    prop_assert!(!valid, "refused {request:?}: {error}");
                    prop_assert_eq!(error.status().as_u16(), 422);
                }
            }
        }
    }
}

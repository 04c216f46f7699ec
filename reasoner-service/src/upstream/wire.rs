//! The chat-completions wire format: the request as OpenAI, vLLM and TGI accept it (system
//! prompt, then the user turn with the image part before the text), and the reply fields read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::RequestBody;
use super::classify::AttemptError;
use super::{ChatCall, ChatReply};

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    /// `true` for a streamed call, absent otherwise (so a plain call's body is unchanged).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// With streaming, usage comes in the last chunk only when asked for (OpenAI, vLLM).
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts([WirePart<'a>; 2]),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    ImageUrl { image_url: WireImageUrl<'a> },
    Text { text: &'a str },
}

#[derive(Serialize)]
struct WireImageUrl<'a> {
    url: &'a str,
}

#[derive(Deserialize)]
struct CompletionBody {
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
}

#[derive(Deserialize)]
struct CompletionMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// The call as the serializable request, with `image_url` as the URL (empty when the image
/// is spliced in afterwards).
fn wire_request<'a>(
    model: &'a str,
    call: &'a ChatCall,
    image_url: &'a str,
    stream: bool,
) -> WireRequest<'a> {
    let mut messages = Vec::with_capacity(2 + 2 * call.history.len());
    if let Some(system) = &call.system {
        messages.push(WireMessage {
            role: "system",
            content: WireContent::Text(system),
        });
    }
    // The conversation so far, as the chat it was: text only, so the image part below stays
    // the body's only one (the splice in `encode` relies on that).
    for turn in &call.history {
        messages.push(WireMessage {
            role: "user",
            content: WireContent::Text(&turn.question),
        });
        messages.push(WireMessage {
            role: "assistant",
            content: WireContent::Text(&turn.answer),
        });
    }
    let user = match &call.image {
        Some(_) => WireContent::Parts([
            WirePart::ImageUrl {
                image_url: WireImageUrl { url: image_url },
            },
            WirePart::Text {
                text: &call.user_text,
            },
        ]),
        None => WireContent::Text(&call.user_text),
    };
    messages.push(WireMessage {
        role: "user",
        content: user,
    });
    WireRequest {
        model,
        messages,
        max_tokens: call.max_tokens,
        temperature: call.temperature,
        response_format: call.response_format.as_ref(),
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    }
}

/// The wire body of a call, the image not copied into it: the JSON is serialized with an
/// empty URL and cut there, and the turn's shared image bytes go between the two halves. A
/// data URI has nothing JSON escapes, so the bytes sent are exactly `serde_json`'s.
pub(super) fn encode(model: &str, call: &ChatCall, stream: bool) -> RequestBody {
    let body = wire_request(model, call, "", stream);
    let json = Bytes::from(serde_json::to_vec(&body).expect("a chat request serializes"));
    let Some(image) = &call.image else {
        return RequestBody::new([json]);
    };
    // Quotes inside string values are escaped, so this structural pattern occurs once: at
    // the image part, the first part of the user turn. Searched from the end, past the
    // question only, not the long system prompt.
    let url_start = rfind(&json, br#"{"url":""}"#).expect("the image part is in the body")
        + br#"{"url":""#.len();
    let mut head = json;
    let tail = head.split_off(url_start);
    let [prefix, payload] = image.pieces();
    RequestBody::new([head, prefix.clone(), payload.clone(), tail])
}

/// The first choice's text and the usage of a 2xx reply.
pub(super) fn decode(bytes: &[u8]) -> Result<ChatReply, AttemptError> {
    let body: CompletionBody = serde_json::from_slice(bytes)
        .map_err(|error| AttemptError::BadBody(format!("not a chat completion: {error}")))?;
    let choice = body
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| AttemptError::BadBody("no choices in the completion".into()))?;
    let usage = body.usage.unwrap_or_default();
    Ok(ChatReply {
        content: choice.message.content.unwrap_or_default(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        retries: 0,
    })
}

/// One chunk of a streamed completion (`data: {...}`): OpenAI's `chat.completion.chunk`.
#[derive(Deserialize)]
struct ChunkBody {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
    /// vLLM and the edge report a failure mid-stream as `{"error": {...}}`.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

/// What one stream chunk carries: the first choice's new text (often empty: the role-only
/// first chunk, the finish chunk) and, in the last chunk, the usage.
pub(super) struct DecodedChunk {
    pub text: String,
    pub usage: Option<(u64, u64)>,
    /// The failure the stream reported instead of text.
    pub error: Option<String>,
}

pub(super) fn decode_chunk(data: &str) -> Result<DecodedChunk, String> {
    let chunk: ChunkBody = serde_json::from_str(data)
        .map_err(|error| format!("not a chat completion chunk: {error}"))?;
    let error = chunk.error.map(|error| {
        error["message"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned)
    });
    let text = chunk
        .choices
        .into_iter()
        .next()
        .and_then(|choice| choice.delta.content)
        .unwrap_or_default();
    let usage = chunk
        .usage
        .map(|usage| (usage.prompt_tokens, usage.completion_tokens));
    Ok(DecodedChunk { text, usage, error })
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::CallKind;

    #[test]
    fn the_spliced_body_is_exactly_the_serialized_request() {
        use base64::Engine;
        let png = [
            &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a][..],
            &[0; 300],
        ]
        .concat();
        let image =
            crate::image::image_data_uri(base64::engine::general_purpose::STANDARD.encode(png))
                .unwrap();
        let url = image.to_string();
        // Prompts that contain the splice pattern itself, quotes and non-ASCII.
        let call = ChatCall {
            kind: CallKind::Verify,
            system: Some(r#"sys {"url":""} "quoted" é"#.into()),
            user_text: r#"Q1. {"url":""}? \ "#.into(),
            image: Some(image.clone()),
            max_tokens: Some(5),
            temperature: Some(0.0),
            response_format: None,
            history: vec![shared_types::PriorTurn {
                question: r#"earlier {"url":""}?"#.into(),
                answer: "é answer".into(),
            }],
        };
        let body = encode("m", &call, false);
        // The image's pieces are the turn's buffers, not copies.
        let chunks: Vec<&Bytes> = body.chunks().collect();
        assert_eq!(chunks.len(), 4);
        let [prefix, payload] = image.pieces();
        assert_eq!(chunks[1].as_ptr(), prefix.as_ptr());
        assert_eq!(chunks[2].as_ptr(), payload.as_ptr());
        let expected = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": r#"sys {"url":""} "quoted" é"#},
                {"role": "user", "content": r#"earlier {"url":""}?"#},
                {"role": "assistant", "content": "é answer"},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": r#"Q1. {"url":""}? \ "#},
                ]},
            ],
            "max_tokens": 5,
            "temperature": 0.0,
        });
        let sent = body.to_vec();
        assert_eq!(serde_json::from_slice::<Value>(&sent).unwrap(), expected);
        // Byte for byte what serializing the URL itself gives.
        let whole = wire_request("m", &call, &url, false);
        assert_eq!(sent, serde_json::to_vec(&whole).unwrap());
        assert_eq!(body.len(), sent.len());
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some(body.len() as u64)
        );

        // Without an image: one chunk, the text as a plain string.
        let call = ChatCall {
            image: None,
            system: None,
            history: Vec::new(),
            ..call
        };
        let body = encode("m", &call, false);
        assert_eq!(body.chunks().len(), 1);
        let sent: Value = serde_json::from_slice(&body.to_vec()).unwrap();
        assert_eq!(sent["messages"][0]["content"], r#"Q1. {"url":""}? \ "#);
        assert!(sent.get("stream").is_none());
        let streamed: Value = serde_json::from_slice(&encode("m", &call, true).to_vec()).unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"]["include_usage"], true);
    }

    #[test]
    fn stream_chunks_give_text_and_the_last_one_usage() {
        let role = decode_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#);
        assert_eq!(role.unwrap().text, "");
        let text = decode_chunk(r#"{"choices":[{"delta":{"content":"He "}}]}"#).unwrap();
        assert_eq!((text.text.as_str(), text.usage), ("He ", None));
        let last =
            decode_chunk(r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#);
        assert_eq!(last.unwrap().usage, Some((9, 3)));
        assert!(decode_chunk("{not json").is_err());
        let failed = decode_chunk(r#"{"error":{"message":"out of memory","type":"x"}}"#);
        assert_eq!(failed.unwrap().error.as_deref(), Some("out of memory"));
    }
}

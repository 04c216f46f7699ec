//! The `stream: true` answer of `/v1/chat/completions`: OpenAI's `chat.completion.chunk`
//! events (a role chunk, one per text piece, a finish chunk, optionally a usage chunk), then
//! `[DONE]`; a failure ends the stream with an `error` event first.

use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};

use super::{finish_reason, usage_of};
use crate::error::ApiError;
use crate::images::DecodedImage;
use crate::openai_types::{ChatCompletionChunk, ChunkChoice, ChunkDelta, CompletionUsage};
use crate::workers::{StreamingGeneration, await_reply};

/// What every chunk of one completion repeats.
#[derive(Clone)]
pub struct ChunkMaker {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChunkMaker {
    fn chunk(
        &self,
        delta: ChunkDelta,
        finish: Option<String>,
        usage: Option<CompletionUsage>,
    ) -> Event {
        // OpenAI's usage chunk has no choices.
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
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices,
                usage,
            })
            .unwrap_or_default()
    }

    fn text(&self, piece: String) -> Event {
        let delta = ChunkDelta {
            role: None,
            content: Some(piece),
        };
        self.chunk(delta, None, None)
    }
}

pub fn completion_events(
    chunks: ChunkMaker,
    streaming: StreamingGeneration,
    deadline: Instant,
    include_usage: bool,
    images: Vec<DecodedImage>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = chunks.chunk(
        ChunkDelta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
        None,
    );
    let text_chunks = chunks.clone();
    let content = tokio_stream::wrappers::UnboundedReceiverStream::new(streaming.pieces)
        .map(move |piece| text_chunks.text(piece));
    let finished = streaming.finished;
    let tail = stream::once(async move {
        // The images hold their decode budget until the generation is over.
        let _images = images;
        let mut events = Vec::new();
        match await_reply(finished, deadline).await {
            Ok(output) => {
                let reason = finish_reason(output.finish_reason).to_owned();
                events.push(chunks.chunk(ChunkDelta::default(), Some(reason), None));
                if include_usage {
                    let usage = Some(usage_of(&output));
                    events.push(chunks.chunk(ChunkDelta::default(), None, usage));
                }
            }
            Err(error) => events.push(ApiError::from(error).into_event()),
        }
        events.push(Event::default().data("[DONE]"));
        stream::iter(events)
    })
    .flatten();
    let all = stream::once(async move { first })
        .chain(content)
        .chain(tail)
        .map(Ok::<_, Infallible>);
    Sse::new(all).keep_alive(KeepAlive::default())
}

//! The Qwen2.5-VL-Instruct chat template (the `chat_template.json` published with the
//! model), and the processor's expansion of each `<|image_pad|>` into one token per merged
//! patch, as `Qwen2_5_VLProcessor.__call__` does with `image_grid_thw` (transformers 4.57.6
//! `src/transformers/models/qwen2_5_vl/processing_qwen2_5_vl.py`).
//!
//! The template, rendered by hand rather than by a Jinja engine:
//! - if the first message is not a system message, a default system turn
//!   `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n` comes first;
//! - each message is `<|im_start|>{role}\n{content}<|im_end|>\n`, where an image part is
//!   `<|vision_start|><|image_pad|><|vision_end|>` (prefixed `Picture N: ` with
//!   `add_vision_id`) and text parts are inserted verbatim;
//! - `add_generation_prompt` appends `<|im_start|>assistant\n`.
//!
//! Text parts are user text (descriptions, questions, chat messages): they are tokenized with
//! special-token strings as plain text, so a description that says `<|im_end|>` or
//! `<|image_pad|>` can neither close a turn nor add an image. Only the template's own markers
//! become control tokens. transformers tokenizes the rendered string in segments between
//! special tokens, so for text without special-token strings the ids are the same.

use crate::tokenizer::{QwenTokenizer, TokenizerError};

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    /// One image, in prompt order; its pixels travel separately.
    Image,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user" or "assistant" (the template accepts any role string).
    pub role: String,
    pub content: Vec<ContentPart>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: Vec<ContentPart>) -> Self {
        Self {
            role: role.into(),
            content,
        }
    }

    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(role, vec![ContentPart::Text(text.into())])
    }

    pub fn system(text: impl Into<String>) -> Self {
        Self::text("system", text)
    }

    pub fn user(content: Vec<ContentPart>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text("assistant", text)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatTemplateOptions {
    pub add_generation_prompt: bool,
    /// Prefix each image with `Picture N: ` (the template's `add_vision_id`).
    pub add_vision_id: bool,
}

/// Why a chat could not be turned into ids.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the prompt has {in_prompt} images but {given} image token counts were given")]
    ImageCountMismatch { in_prompt: usize, given: usize },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// One piece of the rendered template: a marker of the template itself, or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    Control(&'static str),
    Text(&'a str),
}

/// The template as pieces, in order; `Picture N: ` labels are owned by `labels`.
fn template_pieces<'a>(
    messages: &'a [ChatMessage],
    options: ChatTemplateOptions,
    labels: &'a [String],
) -> Vec<Piece<'a>> {
    use Piece::{Control, Text};
    let mut pieces = Vec::new();
    let mut image_count = 0usize;
    for (index, message) in messages.iter().enumerate() {
        if index == 0 && message.role != "system" {
            pieces.extend([
                Control("<|im_start|>"),
                Text("system\n"),
                Text(DEFAULT_SYSTEM_PROMPT),
                Control("<|im_end|>"),
                Text("\n"),
            ]);
        }
        pieces.extend([Control("<|im_start|>"), Text(&message.role), Text("\n")]);
        for part in &message.content {
            match part {
                ContentPart::Text(text) => pieces.push(Text(text)),
                ContentPart::Image => {
                    if options.add_vision_id {
                        pieces.push(Text(&labels[image_count]));
                    }
                    image_count += 1;
                    pieces.extend([
                        Control("<|vision_start|>"),
                        Control("<|image_pad|>"),
                        Control("<|vision_end|>"),
                    ]);
                }
            }
        }
        pieces.extend([Control("<|im_end|>"), Text("\n")]);
    }
    if options.add_generation_prompt {
        pieces.extend([Control("<|im_start|>"), Text("assistant\n")]);
    }
    pieces
}

fn vision_labels(messages: &[ChatMessage]) -> Vec<String> {
    (1..=count_images(messages))
        .map(|n| format!("Picture {n}: "))
        .collect()
}

/// The template's text, with one `<|image_pad|>` per image.
pub fn render_chat_template(messages: &[ChatMessage], options: ChatTemplateOptions) -> String {
    let labels = vision_labels(messages);
    template_pieces(messages, options, &labels)
        .into_iter()
        .map(|piece| match piece {
            Piece::Control(text) | Piece::Text(text) => text,
        })
        .collect()
}

/// Number of images in the messages, in prompt order.
pub fn count_images(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .flat_map(|m| &m.content)
        .filter(|p| matches!(p, ContentPart::Image))
        .count()
}

/// Token ids of the chat, each image's `<|image_pad|>` repeated `image_token_counts[i]`
/// times (`t*h*w / merge_size²` from its `image_grid_thw`).
///
/// Each run of text between two markers is tokenized as one string, special-token strings
/// in it as plain text (see the module comment); markers are their ids.
pub fn encode_chat(
    tokenizer: &QwenTokenizer,
    messages: &[ChatMessage],
    options: ChatTemplateOptions,
    image_token_counts: &[usize],
) -> Result<Vec<u32>, ChatError> {
    let in_prompt = count_images(messages);
    if in_prompt != image_token_counts.len() {
        return Err(ChatError::ImageCountMismatch {
            in_prompt,
            given: image_token_counts.len(),
        });
    }
    let labels = vision_labels(messages);
    let image_pad = tokenizer.special_tokens().image_pad;
    let extra: usize = image_token_counts.iter().sum::<usize>();
    let mut ids = Vec::with_capacity(extra + 64);
    let mut images_seen = 0usize;
    let mut run = String::new();
    for piece in template_pieces(messages, options, &labels) {
        match piece {
            Piece::Text(text) => run.push_str(text),
            Piece::Control(marker) => {
                ids.extend(tokenizer.encode_plain(&run)?);
                run.clear();
                let id = tokenizer.control_id(marker)?;
                if id == image_pad {
                    // One pad marker per image: the count check above keeps this in bounds.
                    let count = image_token_counts[images_seen];
                    images_seen += 1;
                    ids.extend(std::iter::repeat_n(image_pad, count));
                } else {
                    ids.push(id);
                }
            }
        }
    }
    ids.extend(tokenizer.encode_plain(&run)?);
    Ok(ids)
}

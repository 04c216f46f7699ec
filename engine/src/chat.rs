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

/// The template's text, with one `<|image_pad|>` per image.
pub fn render_chat_template(messages: &[ChatMessage], options: ChatTemplateOptions) -> String {
    let mut out = String::new();
    let mut image_count = 0usize;
    for (index, message) in messages.iter().enumerate() {
        if index == 0 && message.role != "system" {
            out.push_str("<|im_start|>system\n");
            out.push_str(DEFAULT_SYSTEM_PROMPT);
            out.push_str("<|im_end|>\n");
        }
        out.push_str("<|im_start|>");
        out.push_str(&message.role);
        out.push('\n');
        for part in &message.content {
            match part {
                ContentPart::Text(text) => out.push_str(text),
                ContentPart::Image => {
                    image_count += 1;
                    if options.add_vision_id {
                        out.push_str(&format!("Picture {image_count}: "));
                    }
                    out.push_str("<|vision_start|><|image_pad|><|vision_end|>");
                }
            }
        }
        out.push_str("<|im_end|>\n");
    }
    if options.add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
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
/// Expanding after tokenization gives the same ids as HF's expansion in the text, because
/// added tokens are split out before BPE runs.
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
    let ids = tokenizer.encode(&render_chat_template(messages, options))?;
    let image_pad = tokenizer.special_tokens().image_pad;
    let extra: usize = image_token_counts.iter().sum::<usize>();
    let mut expanded = Vec::with_capacity(ids.len() + extra);
    let mut counts = image_token_counts.iter();
    for id in ids {
        if id == image_pad {
            // A user text that itself contains "<|image_pad|>" would add a pad the images
            // do not account for; HF fails on that too, and so do we.
            let Some(&count) = counts.next() else {
                return Err(ChatError::ImageCountMismatch {
                    in_prompt: in_prompt + 1,
                    given: image_token_counts.len(),
                });
            };
            expanded.extend(std::iter::repeat_n(image_pad, count));
        } else {
            expanded.push(id);
        }
    }
    Ok(expanded)
}

//! `slc-detector tokenize`: the ids our tokenizer gives a text, as one JSON array, so anyone
//! can hold them against transformers' on the same `tokenizer.json`.
//!
//! - Plain: as `tokenizer(text, add_special_tokens=False)`: special-token strings written in
//!   the text (`<|im_end|>`) become their ids.
//! - `--user-text`: as the service tokenizes user text (`encode_plain`): those strings stay
//!   text, as `split_special_tokens=True` does in transformers.
//! - `--chat`: TEXT as one user message in the Qwen2.5-VL chat template with the generation
//!   prompt (`apply_chat_template(..., add_generation_prompt=True)`), the default system prompt
//!   unless `--system`, and one image per `--image-tokens N` before the text, each expanded to
//!   N `<|image_pad|>` ids as the processor does.

use std::path::PathBuf;

use slc_engine::chat::{ChatMessage, ChatTemplateOptions, ContentPart, encode_chat};
use slc_engine::tokenizer::QwenTokenizer;

#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// Checkpoint or tokenizer directory holding tokenizer.json.
    #[arg(long, env = "SLC_MODEL_DIR")]
    pub model: PathBuf,
    /// Wrap TEXT in the chat template as one user message, with the generation prompt.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system prompt instead of the template's default.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// With --chat: one image before the text, taking N `<|image_pad|>` tokens (repeatable).
    #[arg(long = "image-tokens", value_name = "N", requires = "chat")]
    pub image_tokens: Vec<usize>,
    /// Keep special-token strings in TEXT as text, as the service does with user text.
    #[arg(long, conflicts_with = "chat")]
    pub user_text: bool,
    pub text: String,
}

pub fn run(args: &TokenizeArgs) -> anyhow::Result<Vec<u32>> {
    let tokenizer = QwenTokenizer::from_model_dir(&args.model)?;
    if !args.chat {
        return Ok(if args.user_text {
            tokenizer.encode_plain(&args.text)?
        } else {
            tokenizer.encode(&args.text)?
        });
    }
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::system(system.clone()));
    }
    let mut content = vec![ContentPart::Image; args.image_tokens.len()];
    content.push(ContentPart::Text(args.text.clone()));
    messages.push(ChatMessage::user(content));
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        add_vision_id: false,
    };
    Ok(encode_chat(
        &tokenizer,
        &messages,
        options,
        &args.image_tokens,
    )?)
}

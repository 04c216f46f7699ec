//! Turning LLaVA-style conversations into training examples for Qwen2.5-VL: the chat template
//! the model is served with (`crate::chat`), images through the slow Qwen2-VL processor
//! (`crate::preprocess`), and a label mask that keeps the loss on assistant tokens only
//! (each assistant reply and its `<|im_end|>`, as LLaVA-style fine-tuning does).

use super::dataset::{ConceptDataset, Conversation};
use crate::chat::{
    ChatMessage, ChatTemplateOptions, ContentPart, DEFAULT_SYSTEM_PROMPT, encode_chat,
};
use crate::error::{EngineError, Result};
use crate::preprocess::{DecodeLimits, PixelBudget, Qwen2VlImageProcessor, decode_rgb};
use crate::tokenizer::QwenTokenizer;

/// One conversation, tokenized.
pub struct TrainingExample {
    pub input_ids: Vec<i64>,
    /// `predict[t]`: the loss includes predicting token `t` from the tokens before it.
    pub predict: Vec<bool>,
    /// Pixel values [patches, patch_dim] of the images in prompt order, and their grids.
    pub pixel_values: Vec<f32>,
    pub patch_dim: usize,
    pub grids: Vec<[i64; 3]>,
}

fn invalid(message: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidInput(message.to_string())
}

/// Chat messages of a conversation, with the concept description as system prompt when the
/// conversation brings none.
pub fn conversation_messages(conversation: &Conversation, description: &str) -> Vec<ChatMessage> {
    let mut messages = Vec::new();
    if conversation
        .conversations
        .first()
        .is_none_or(|t| t.from != "system")
    {
        messages.push(ChatMessage::system(format!(
            "{DEFAULT_SYSTEM_PROMPT} {description}"
        )));
    }
    for turn in &conversation.conversations {
        let role = match turn.from.as_str() {
            "human" | "user" => "user",
            "gpt" | "assistant" => "assistant",
            other => other,
        };
        let mut content = Vec::new();
        for (i, piece) in turn.value.split("<image>").enumerate() {
            if i > 0 {
                content.push(ContentPart::Image);
            }
            // LLaVA puts a newline after `<image>`; Qwen's template has none after the vision block.
            let piece = if i > 0 {
                piece.strip_prefix('\n').unwrap_or(piece)
            } else {
                piece
            };
            if !piece.is_empty() {
                content.push(ContentPart::Text(piece.to_string()));
            }
        }
        messages.push(ChatMessage::new(role, content));
    }
    messages
}

pub struct ExampleBuilder<'a> {
    pub tokenizer: &'a QwenTokenizer,
    pub processor: &'a Qwen2VlImageProcessor,
    pub budget: PixelBudget,
    pub merge_size: usize,
}

impl ExampleBuilder<'_> {
    pub fn build(
        &self,
        concept: &ConceptDataset,
        conversation: &Conversation,
    ) -> Result<TrainingExample> {
        let mut images = Vec::with_capacity(conversation.images.len());
        for image in &conversation.images {
            let path = concept.folder.join(image);
            let bytes =
                std::fs::read(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            images.push(
                decode_rgb(&bytes, DecodeLimits::default())
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?,
            );
        }
        let inputs = self
            .processor
            .preprocess(&images, self.budget)
            .map_err(|e| invalid(format!("concept `{}`: {e}", concept.name)))?;
        let counts: Vec<usize> = (0..images.len())
            .map(|i| inputs.image_token_count(i, self.merge_size))
            .collect();
        let messages = conversation_messages(conversation, &concept.description);
        let ids = encode_chat(
            self.tokenizer,
            &messages,
            ChatTemplateOptions::default(),
            &counts,
        )
        .map_err(|e| invalid(format!("concept `{}`: {e}", concept.name)))?;
        let special = self.tokenizer.special_tokens();
        let header = self
            .tokenizer
            .encode_plain("assistant\n")
            .map_err(|e| invalid(format!("tokenizer: {e}")))?;
        let predict = assistant_mask(&ids, special.im_start, special.im_end, &header);
        if !predict.iter().any(|p| *p) {
            return Err(invalid(format!(
                "concept `{}`: a conversation has no assistant tokens",
                concept.name
            )));
        }
        Ok(TrainingExample {
            input_ids: ids.iter().map(|&id| i64::from(id)).collect(),
            predict,
            pixel_values: inputs.pixel_values,
            patch_dim: inputs.patch_dim,
            grids: inputs
                .image_grid_thw
                .iter()
                .map(|g| [g[0] as i64, g[1] as i64, g[2] as i64])
                .collect(),
        })
    }
}

/// Marks the tokens after each `<|im_start|>assistant\n` header up to and including the next
/// `<|im_end|>`.
pub fn assistant_mask(ids: &[u32], im_start: u32, im_end: u32, header: &[u32]) -> Vec<bool> {
    let mut mask = vec![false; ids.len()];
    let mut i = 0;
    while i < ids.len() {
        if ids[i] == im_start && ids[i + 1..].starts_with(header) {
            let mut j = i + 1 + header.len();
            while j < ids.len() {
                mask[j] = true;
                if ids[j] == im_end {
                    break;
                }
                j += 1;
            }
            i = j;
        }
        i += 1;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_assistant_replies_and_their_end_token_are_predicted() {
        // 1 = <|im_start|>, 2 = <|im_end|>, [7, 8] = "assistant\n".
        let ids = [
            1, 5, 9, 2, 1, 6, 9, 2, 1, 7, 8, 30, 31, 2, 1, 6, 9, 2, 1, 7, 8, 40, 2,
        ];
        let mask = assistant_mask(&ids, 1, 2, &[7, 8]);
        let predicted: Vec<u32> = ids
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(predicted, vec![30, 31, 2, 40, 2]);
    }

    #[test]
    fn description_becomes_the_system_prompt_when_missing() {
        let conversation: Conversation = serde_json::from_value(serde_json::json!({
            "conversations": [{"from": "human", "value": "<image>\nIs <bo> here?"}, {"from": "gpt", "value": "Yes."}],
            "images": ["0.jpg"]
        }))
        .unwrap();
        let messages = conversation_messages(&conversation, "<bo> is a dog.");
        assert_eq!(
            messages[0],
            ChatMessage::system("You are a helpful assistant. <bo> is a dog.")
        );
        assert_eq!(
            messages[1],
            ChatMessage::user(vec![
                ContentPart::Image,
                ContentPart::Text("Is <bo> here?".into())
            ])
        );
        assert_eq!(messages[2], ChatMessage::assistant("Yes."));
    }
}

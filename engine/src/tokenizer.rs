//! The Qwen2.5-VL tokenizer: HF `tokenizer.json` through the `tokenizers` crate (the same
//! 0.22.1 core that backs transformers' `Qwen2TokenizerFast`), plus the special-token ids
//! the model and the chat template need.

use crate::generation::Detokenize;
use std::path::Path;

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: String, message: String },
    #[error("the tokenizer has no token {0:?}, which Qwen2.5-VL needs")]
    MissingSpecialToken(&'static str),
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// Ids of the Qwen2.5-VL special tokens, read from the tokenizer (not hard-coded, so tiny
/// fixture tokenizers and the real 151k one both work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QwenSpecialTokens {
    pub endoftext: u32,
    pub im_start: u32,
    pub im_end: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub image_pad: u32,
    pub video_pad: u32,
}

pub struct QwenTokenizer {
    inner: tokenizers::Tokenizer,
    /// `inner` with special-token strings read as plain text: for user text.
    plain: tokenizers::Tokenizer,
    special: QwenSpecialTokens,
}

impl std::fmt::Debug for QwenTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

impl QwenTokenizer {
    /// Loads `tokenizer.json` from a checkpoint directory.
    pub fn from_model_dir(dir: &Path) -> Result<Self, TokenizerError> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(inner)
    }

    pub fn from_bytes(json: &[u8]) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| TokenizerError::Load {
            path: "<bytes>".into(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(inner)
    }

    fn from_tokenizer(inner: tokenizers::Tokenizer) -> Result<Self, TokenizerError> {
        let id = |token: &'static str| {
            inner
                .token_to_id(token)
                .ok_or(TokenizerError::MissingSpecialToken(token))
        };
        let special = QwenSpecialTokens {
            endoftext: id("<|endoftext|>")?,
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            vision_start: id("<|vision_start|>")?,
            vision_end: id("<|vision_end|>")?,
            image_pad: id("<|image_pad|>")?,
            video_pad: id("<|video_pad|>")?,
        };
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        Ok(Self {
            inner,
            plain,
            special,
        })
    }

    pub fn special_tokens(&self) -> QwenSpecialTokens {
        self.special
    }

    /// Number of ids the tokenizer can produce (BPE vocabulary plus added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) become their
    /// ids, as in transformers. Qwen adds no BOS/EOS, so nothing else is inserted.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of user text: special-token strings in it (`<|im_end|>`) stay plain text and
    /// never become control tokens. The only way user text is turned into ids.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self
            .plain
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of one of the chat template's markers.
    pub fn control_id(&self, marker: &'static str) -> Result<u32, TokenizerError> {
        self.inner
            .token_to_id(marker)
            .ok_or(TokenizerError::MissingSpecialToken(marker))
    }

    /// Text of `ids`; with `skip_special_tokens` the chat and vision markers are dropped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The raw bytes each id stands for (byte-level BPE undone; added tokens as their text),
    /// indexed by id; ids without a token are empty. This is what a token trie for
    /// constrained decoding is built from.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        let byte_of_char = byte_level_decoding_table();
        let mut table = vec![Vec::new(); self.vocab_size()];
        let added: std::collections::HashMap<u32, String> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, token)| (id, token.content))
            .collect();
        for (token, id) in self.inner.get_vocab(true) {
            let Some(slot) = table.get_mut(id as usize) else {
                continue;
            };
            *slot = match added.get(&id) {
                Some(content) => content.as_bytes().to_vec(),
                None => token
                    .chars()
                    .map(|c| byte_of_char.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    // Not a byte-level token (never in Qwen's vocab): keep its UTF-8.
                    .unwrap_or_else(|| token.as_bytes().to_vec()),
            };
        }
        table
    }

    /// Whether `id` is an added special token (chat and vision markers, `<|endoftext|>`).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// GPT-2's byte-level alphabet inverted: the printable char each byte was mapped to → byte.
fn byte_level_decoding_table() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut next = 0u32;
    for byte in 0..=255u32 {
        if !printable.contains(&byte) {
            printable.push(byte);
            chars.push(256 + next);
            next += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .map(|(byte, c)| (char::from_u32(c).expect("valid char"), byte as u8))
        .collect()
}

/// The decoder's detokenizer seam.
impl Detokenize for QwenTokenizer {
    fn decode(&self, ids: &[u32]) -> String {
        // Undecodable ids cannot come from our own sampling; an empty string is the safe answer.
        QwenTokenizer::decode(self, ids, true).unwrap_or_default()
    }
}

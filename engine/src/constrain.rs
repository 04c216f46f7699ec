//! Constrained decoding with llguidance: a JSON schema, a fixed choice or a regex becomes,
//! at every step, the set of token ids that keep the output inside the grammar, plus the run
//! of tokens the grammar forces next (jump-forward: the caller feeds that run in one forward
//! step instead of sampling each token).
//!
//! No tch here: masks are bitsets over the model's vocabulary, applied to plain `f32` logits,
//! so the grammar logic is testable without a model.
//!
//! `ConstraintVocabulary` (the token trie; built once per tokenizer, it is the expensive part)
//! → `Constraint` (one per request).

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::error::EngineError;
use crate::generation::TokenConstraint;
use crate::tokenizer::QwenTokenizer;

/// Why a constraint could not be built or advanced.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    #[error("invalid grammar: {0}")]
    InvalidGrammar(String),
    #[error("token {token} is not allowed by the grammar here: {message}")]
    TokenRejected { token: u32, message: String },
    #[error("constraint engine failed: {0}")]
    Internal(String),
}

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// A JSON schema (draft 2020-12 subset llguidance supports). Unless the schema carries its
    /// own `x-guidance` options, output is compact JSON (`,` and `:`, no free whitespace),
    /// which makes object keys and punctuation forced.
    JsonSchema(serde_json::Value),
    /// Exactly one of these strings, e.g. `["yes", "no"]`.
    Choice(Vec<String>),
    /// A regular expression the whole output must match.
    Regex(String),
    /// An llguidance Lark grammar, for anything else.
    Lark(String),
}

impl Grammar {
    fn to_llguidance(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Grammar::JsonSchema(schema) => {
                let mut schema = schema.clone();
                let object = schema.as_object_mut().ok_or_else(|| {
                    ConstraintError::InvalidGrammar("a JSON schema must be an object".into())
                })?;
                object.entry("x-guidance").or_insert_with(|| {
                    serde_json::json!({
                        "whitespace_flexible": false,
                        "item_separator": ", ",
                        "key_separator": ": ",
                    })
                });
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Choice(options) => {
                if options.is_empty() {
                    return Err(ConstraintError::InvalidGrammar(
                        "a choice needs at least one option".into(),
                    ));
                }
                let alternatives: Vec<String> = options.iter().map(|o| escape_regex(o)).collect();
                TopLevelGrammar::from_regex(&format!("({})", alternatives.join("|")))
            }
            Grammar::Regex(regex) => TopLevelGrammar::from_regex(regex),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        })
    }
}

/// Backslash-escapes every regex metacharacter so `literal` matches only itself.
fn escape_regex(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() * 2);
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The tokenizer as llguidance sees it: each id's bytes in a trie, special tokens marked so
/// the grammar can never produce them as text.
struct TokenizerForGrammar {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl TokenizerEnv for TokenizerForGrammar {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<TokenId> {
        // Forced text is tokenized as the model's tokenizer would (canonical ids); bytes that
        // are not valid UTF-8 fall back to the trie's greedy split.
        self.trie.tokenize_with_greedy_fallback(bytes, |text| {
            self.tokenizer
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// The per-tokenizer part of constrained decoding; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct ConstraintVocabulary {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
    end_of_turn: u32,
}

impl std::fmt::Debug for ConstraintVocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintVocabulary")
            .field("vocab_size", &self.vocab_size)
            .field("end_of_turn", &self.end_of_turn)
            .finish()
    }
}

impl ConstraintVocabulary {
    /// `model_vocab_size` is the number of logits the model produces (the embedding rows,
    /// 151936 for Qwen2.5-VL-3B), which may exceed the tokenizer's ids; the extra ids are
    /// never allowed. `<|im_end|>` ends a constrained answer: the mask allows it exactly
    /// when the grammar is complete.
    pub fn new(
        tokenizer: &QwenTokenizer,
        model_vocab_size: usize,
    ) -> Result<Self, ConstraintError> {
        let mut token_bytes = tokenizer.token_bytes();
        if model_vocab_size < token_bytes.len() {
            return Err(ConstraintError::Internal(format!(
                "model vocabulary ({model_vocab_size}) is smaller than the tokenizer's ({})",
                token_bytes.len()
            )));
        }
        for (id, bytes) in token_bytes.iter_mut().enumerate() {
            if tokenizer.is_special(id as u32) {
                bytes.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        token_bytes.resize(model_vocab_size, Vec::new());
        let end_of_turn = tokenizer.special_tokens().im_end;
        let mut info = TokRxInfo::new(model_vocab_size as u32, end_of_turn);
        info.tok_end_of_turn = Some(end_of_turn);
        info.tok_pad = Some(tokenizer.special_tokens().endoftext);
        // Forced text comes from a client's schema: special-token strings in it stay text, as
        // in every user text (`QwenTokenizer::encode_plain`).
        let mut plain = tokenizer.inner().clone();
        plain.set_encode_special_tokens(true);
        let env: TokEnv = Arc::new(TokenizerForGrammar {
            trie: TokTrie::from(&info, &token_bytes),
            tokenizer: plain,
        });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Internal(e.to_string()))?;
        // Grammar warnings go to our errors, not to stderr.
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            vocab_size: model_vocab_size,
            end_of_turn,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id that ends a constrained answer (`<|im_end|>`).
    pub fn end_of_turn(&self) -> u32 {
        self.end_of_turn
    }
}

/// A bitset over the model vocabulary: bit `i` set = token `i` allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    words: Vec<u32>,
    vocab_size: usize,
}

impl TokenMask {
    pub fn is_allowed(&self, token: u32) -> bool {
        let i = token as usize;
        i < self.vocab_size && self.words[i / 32] & (1 << (i % 32)) != 0
    }

    pub fn allowed_count(&self) -> usize {
        self.allowed_ids().len()
    }

    pub fn allowed_ids(&self) -> Vec<u32> {
        (0..self.vocab_size as u32)
            .filter(|&t| self.is_allowed(t))
            .collect()
    }

    /// 32 tokens per word, little-endian bit order (the layout `torch` bitmask kernels use).
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Sets every disallowed logit to `-inf`; `logits.len()` is the model vocabulary size.
    pub fn apply_to_logits(&self, logits: &mut [f32]) {
        for (i, logit) in logits.iter_mut().enumerate() {
            if !self.is_allowed(i as u32) {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}

/// Decode-step accounting for jump-forward: one step per forward pass, however many tokens
/// it feeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConstraintStats {
    /// Tokens chosen by the model (sampled or argmax under the mask).
    pub sampled_tokens: usize,
    /// Tokens the grammar forced, fed without sampling.
    pub forced_tokens: usize,
}

impl ConstraintStats {
    pub fn emitted_tokens(&self) -> usize {
        self.sampled_tokens + self.forced_tokens
    }
}

/// One request's grammar state.
pub struct Constraint {
    matcher: Matcher,
    vocab_size: usize,
    end_of_turn: u32,
    stats: ConstraintStats,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stats", &self.stats)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl Constraint {
    pub fn new(
        vocabulary: &ConstraintVocabulary,
        grammar: &Grammar,
    ) -> Result<Self, ConstraintError> {
        let parser = vocabulary
            .factory
            .create_parser(grammar.to_llguidance()?)
            .map_err(|e| ConstraintError::InvalidGrammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(ConstraintError::InvalidGrammar(error));
        }
        Ok(Self {
            matcher,
            vocab_size: vocabulary.vocab_size,
            end_of_turn: vocabulary.end_of_turn,
            stats: ConstraintStats::default(),
        })
    }

    pub fn json_schema(
        vocabulary: &ConstraintVocabulary,
        schema: &serde_json::Value,
    ) -> Result<Self, ConstraintError> {
        Self::new(vocabulary, &Grammar::JsonSchema(schema.clone()))
    }

    pub fn choice(
        vocabulary: &ConstraintVocabulary,
        options: &[&str],
    ) -> Result<Self, ConstraintError> {
        Self::new(
            vocabulary,
            &Grammar::Choice(options.iter().map(|s| s.to_string()).collect()),
        )
    }

    pub fn regex(vocabulary: &ConstraintVocabulary, regex: &str) -> Result<Self, ConstraintError> {
        Self::new(vocabulary, &Grammar::Regex(regex.to_owned()))
    }

    /// Tokens allowed next. Once the grammar is complete only `<|im_end|>` is allowed.
    pub fn allowed_tokens(&mut self) -> Result<TokenMask, ConstraintError> {
        let vob = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstraintError::Internal(e.to_string()))?;
        let mut words = vob.as_slice().to_vec();
        words.resize(self.vocab_size.div_ceil(32), 0);
        Ok(TokenMask {
            words,
            vocab_size: self.vocab_size,
        })
    }

    /// The run of tokens the grammar forces from here (possibly empty). They are not
    /// committed: the caller feeds them to the model and then calls `commit_forced`.
    pub fn forced_tokens(&mut self) -> Vec<u32> {
        if self.matcher.is_stopped() {
            return Vec::new();
        }
        self.matcher.compute_ff_tokens()
    }

    /// Advances past tokens the model chose.
    pub fn commit(&mut self, tokens: &[u32]) -> Result<(), ConstraintError> {
        self.consume(tokens)?;
        self.stats.sampled_tokens += tokens.len();
        Ok(())
    }

    /// Advances past tokens `forced_tokens` returned.
    pub fn commit_forced(&mut self, tokens: &[u32]) -> Result<(), ConstraintError> {
        self.consume(tokens)?;
        self.stats.forced_tokens += tokens.len();
        Ok(())
    }

    fn consume(&mut self, tokens: &[u32]) -> Result<(), ConstraintError> {
        if self.matcher.is_stopped() {
            // Only the end-of-turn token may follow a finished grammar; it changes nothing.
            return match tokens.iter().find(|&&t| t != self.end_of_turn) {
                None => Ok(()),
                Some(&token) => Err(ConstraintError::TokenRejected {
                    token,
                    message: "the grammar is already complete".into(),
                }),
            };
        }
        for &token in tokens {
            let accepted = self
                .matcher
                .try_consume_tokens(&[token])
                .map_err(|e| ConstraintError::Internal(e.to_string()))?;
            if accepted != 1 {
                return Err(ConstraintError::TokenRejected {
                    token,
                    message: self
                        .matcher
                        .get_error()
                        .unwrap_or_else(|| "not in the mask".into()),
                });
            }
        }
        Ok(())
    }

    /// True once the grammar can take no more text (the answer is complete; only
    /// `<|im_end|>` remains allowed).
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// True if the text so far is a complete match (ending here would be valid), even if
    /// the grammar could also continue (e.g. a regex `a+`).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }

    pub fn stats(&self) -> ConstraintStats {
        self.stats
    }
}

/// The decoder's grammar seam, by llguidance.
impl TokenConstraint for Constraint {
    fn forced_tokens(&mut self) -> crate::Result<Vec<u32>> {
        Ok(Constraint::forced_tokens(self))
    }
    fn allowed_tokens(&mut self) -> crate::Result<Vec<u32>> {
        Ok(Constraint::allowed_tokens(self)
            .map_err(|e| EngineError::Constraint(e.to_string()))?
            .words()
            .to_vec())
    }
    fn consume(&mut self, tokens: &[u32], forced: bool) -> crate::Result<()> {
        let result = if forced {
            self.commit_forced(tokens)
        } else {
            self.commit(tokens)
        };
        result.map_err(|e| EngineError::Constraint(e.to_string()))
    }
    fn is_finished(&self) -> bool {
        Constraint::is_finished(self)
    }
}

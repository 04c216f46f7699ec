//! The engine's one error enum. Every failure a caller can cause (a bad checkpoint, an unknown
//! device, a prompt that does not fit) is a typed variant here, so the service layer maps it to
//! an HTTP status in one place and nothing panics.

/// Errors of the model layer. The `kind()` string is stable and machine-readable.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("missing tensor `{key}` in the checkpoint")]
    MissingTensor { key: String },
    #[error("tensor `{key}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        key: String,
        expected: Vec<i64>,
        actual: Vec<i64>,
    },
    #[error("config.json: {0}")]
    Config(String),
    #[error("unknown device `{0}` (expected cpu, cuda or cuda:N)")]
    UnknownDevice(String),
    #[error("unknown dtype `{0}` (expected f32 or bf16)")]
    UnknownDtype(String),
    #[error("device `{0}` is not available on this machine")]
    DeviceUnavailable(String),
    #[error(
        "prompt of {prompt_tokens} tokens plus {max_new_tokens} new tokens exceeds the context of {context} tokens"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        max_new_tokens: usize,
        context: usize,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("constraint: {0}")]
    Constraint(String),
    #[error(transparent)]
    AdapterName(#[from] crate::lora::AdapterNameError),
    #[error("image: {0}")]
    Image(#[from] crate::preprocess::PreprocessError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

impl EngineError {
    /// A stable machine-readable name for the error's `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Checkpoint { .. } => "checkpoint",
            EngineError::MissingTensor { .. } => "missing_tensor",
            EngineError::TensorShape { .. } => "tensor_shape",
            EngineError::Config(_) => "config",
            EngineError::UnknownDevice(_) => "unknown_device",
            EngineError::UnknownDtype(_) => "unknown_dtype",
            EngineError::DeviceUnavailable(_) => "device_unavailable",
            EngineError::PromptTooLong { .. } => "prompt_too_long",
            EngineError::InvalidInput(_) => "invalid_input",
            EngineError::Constraint(_) => "constraint",
            EngineError::AdapterName(_) => "adapter_name",
            EngineError::Image(_) => "invalid_image",
            EngineError::Tokenizer(_) => "tokenizer",
            EngineError::Torch(_) => "torch",
        }
    }

    /// Whether the caller caused it (a 4xx) rather than the server (a 5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            EngineError::UnknownDevice(_)
                | EngineError::UnknownDtype(_)
                | EngineError::PromptTooLong { .. }
                | EngineError::InvalidInput(_)
                | EngineError::AdapterName(_)
        ) || matches!(self, EngineError::Image(e) if !matches!(e, crate::preprocess::PreprocessError::Config(_)))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

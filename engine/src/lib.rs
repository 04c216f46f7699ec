//! Model code of the SLC edge: tensors in, tensors out. Knows nothing about HTTP.

pub mod chat;
pub mod clip;
pub mod constrain;
pub mod device;
pub mod error;
pub mod generation;
pub mod lora;
pub mod lru;
pub mod meta_train;
pub mod nn;
pub mod pipeline;
pub mod prefix_cache;
pub mod preprocess;
pub mod quant;
pub mod qwen2_5_vl;
pub mod safetensors_header;
pub mod serving;
pub mod tokenizer;
pub mod weights;

pub use error::{EngineError, Result};

//! Model code of the SLC edge: tensors in, tensors out. Knows nothing about HTTP.

pub mod device;
pub mod error;
pub mod generation;
pub mod nn;
pub mod qwen2_5_vl;
pub mod weights;

pub use error::{EngineError, Result};

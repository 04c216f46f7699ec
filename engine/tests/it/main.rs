//! The engine crate's one integration test binary.

mod chat_parity;
mod clip_parity;
mod constrain_tests;
mod lora_bank;
mod lora_parity;
mod meta_train;
mod prefix_reuse;
mod preprocess_parity;
mod quantized;
mod qwen25vl_bf16_parity;
mod qwen25vl_config;
mod qwen25vl_loading;
mod qwen25vl_parity;
mod serving;
mod smoke;
mod streaming;

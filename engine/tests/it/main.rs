//! The engine crate's one integration test binary.

mod qwen25vl_loading;
mod qwen25vl_parity;
mod smoke;

//! HTTP handlers, one module per resource.

pub mod ask;
pub mod chat;
pub mod concepts;
pub mod detect;
pub mod health;
mod isolation;

//! HTTP handlers, one module per resource.

pub mod ask;
pub mod ask_conversation;
pub mod ask_stream;
pub mod chat;
pub mod concepts;
pub mod conversations;
pub mod detect;
pub mod health;
mod isolation;
pub mod scenarios;
pub mod tenants;
pub mod turn_concepts;

//! HTTP handlers, one module per resource.

pub mod ask;
pub mod ask_conversation;
pub mod chat;
pub mod concepts;
pub mod conversations;
pub mod detect;
pub mod health;
pub mod scenarios;
pub mod turn_concepts;

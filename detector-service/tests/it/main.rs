//! The detector crate's one integration test binary.

mod ask;
mod atomicity;
mod bad_input;
mod chat;
mod concepts_http;
mod console;
mod conversations_http;
mod detect;
mod doubles;
mod generate_cli;
mod helpers;
mod meta_train_cli;
mod operations;
mod real_engine;
mod registry;
mod registry_conversations;
mod runtime_links;
mod status;

//! The detector crate's one integration test binary.

mod ask;
mod atomicity;
mod bad_input;
mod boxes;
mod chat;
mod check_cli;
mod concepts_http;
mod console;
mod conversations_http;
mod detect;
mod doubles;
mod generate_cli;
mod helpers;
mod isolation;
mod meta_train_cli;
mod operations;
mod real_engine;
mod real_tokenizer;
mod registry;
mod registry_conversations;
mod runtime_links;
mod status;
mod tenant_data;
mod tenant_matrix;
mod tenant_migration;
mod tenants;

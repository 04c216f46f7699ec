//! The detector crate's one integration test binary.

mod generate_cli;
mod runtime_links;

//! The end-to-end crate's one integration test binary.

mod bad_input_corpus;
mod console;
mod conversations;
mod deploy_checks;
mod deploy_drift;
mod e2e;
mod recheck;
mod slow_clients;
mod streaming;

//! The end-to-end crate's one integration test binary.

mod bad_input_corpus;
mod console;
mod deploy_checks;
mod deploy_drift;
mod conversations;
mod e2e;
mod slow_clients;

//! The reasoner crate's one integration test binary.

mod binary;
mod cache;
mod faults;
mod helpers;
mod history;
mod http;
mod identity_isolation;
mod modes;
mod no_libtorch;
mod openapi;
mod paper;
mod privacy;
mod prompts;
mod recheck;
mod rules;
mod server;
mod status;
mod stream_upstream;
mod streaming;
mod verification_isolation;

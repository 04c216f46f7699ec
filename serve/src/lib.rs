//! The HTTP serving both SLC services share, so that a slow or hostile client costs a bounded
//! amount and never starves real requests:
//!
//! - [`serve`]: the accept loop (hyper directly, see `accept.rs`), with a cap on open
//!   connections and a deadline on reading each request head;
//! - [`read_body`]: a middleware that reads the whole body under a size limit and one deadline
//!   for all of it (a per-chunk timeout would let a client trickle a byte at a time forever),
//!   before anything behind it runs: a turn permit or a model-queue slot is taken only for a
//!   request that has fully arrived.

mod accept;
mod body;

use std::time::Duration;

pub use accept::{READ_BUFFER_BYTES, serve};
pub use body::{BodyLimits, read_body};

/// What one server accepts.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections at most; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// The longest a client may take to send a request head (and to start the next one on a
    /// kept-alive connection).
    pub header_read_timeout: Duration,
}

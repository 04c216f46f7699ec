//! The HTTP serving both SLC services share, so that a slow or hostile client costs a bounded
//! amount and never starves real requests:
//!
//! - [`serve`]: the accept loop (hyper directly, see `accept.rs`), with a cap on open
//!   connections and a deadline on reading each request head;
//! - [`read_body`]: a middleware that reads the whole body under a size limit and one deadline
//!   for all of it (a per-chunk timeout would let a client trickle a byte at a time forever),
//!   before anything behind it runs: a turn permit or a model-queue slot is taken only for a
//!   request that has fully arrived;
//! - [`sse`]: the incremental server-sent-events parser both services read streams with.

mod accept;
mod body;
pub mod sse;

use std::time::Duration;

pub use accept::{READ_BUFFER_BYTES, serve};
pub use body::{BodyLimits, read_body};

/// Both limits from a service's flags: its connection cap, its body limit and the one read
/// deadline that applies to the first byte, each request head and each body.
pub fn limits(
    max_connections: usize,
    max_body_bytes: usize,
    read_timeout_secs: f64,
) -> (ServerLimits, BodyLimits) {
    let deadline = Duration::from_secs_f64(read_timeout_secs);
    let server = ServerLimits {
        max_connections,
        header_read_timeout: deadline,
    };
    let body = BodyLimits {
        max_bytes: max_body_bytes,
        deadline,
    };
    (server, body)
}

/// What one server accepts.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections at most; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// The longest a client may take to send a request head (and to start the next one on a
    /// kept-alive connection).
    pub header_read_timeout: Duration,
}

/// Refuses an address other machines can reach when no client keys are configured: on such a
/// bind anyone who reaches the port could use the service (and, for the reasoner, the
/// operator's large-model key). `allow_flag` names the switch that overrides it.
pub fn refuse_open_bind(
    bind: std::net::SocketAddr,
    has_keys: bool,
    allow_unauthenticated: bool,
    allow_flag: &str,
) -> Result<(), String> {
    if has_keys || allow_unauthenticated || bind.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {bind} without API keys: anyone who can reach it could use this \
         service. Set keys, bind a loopback address, or set {allow_flag}=true to accept that"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_open_bind_without_keys_is_refused() {
        let open = "0.0.0.0:8080".parse().unwrap();
        let loopback = "127.0.0.1:8080".parse().unwrap();
        let loopback_v6 = "[::1]:8080".parse().unwrap();
        assert!(
            refuse_open_bind(open, false, false, "X")
                .unwrap_err()
                .contains("X=true")
        );
        assert!(refuse_open_bind(open, true, false, "X").is_ok());
        assert!(refuse_open_bind(open, false, true, "X").is_ok());
        assert!(refuse_open_bind(loopback, false, false, "X").is_ok());
        assert!(refuse_open_bind(loopback_v6, false, false, "X").is_ok());
    }
}

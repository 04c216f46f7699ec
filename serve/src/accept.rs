//! The accept loop: the axum router served by hyper directly rather than by `axum::serve`,
//! for what a thousand concurrent turns need and `axum::serve` does not let us set.
//!
//! - **A bounded read buffer per connection.** hyper grows a connection's read buffer to fit
//!   the largest read it has seen and keeps reserving that much for every later request on the
//!   keep-alive connection: with ~22 KB image bodies that was ~32 KB per idle connection, the
//!   largest single item in the heap profile at 1000 connections. Capped at
//!   [`READ_BUFFER_BYTES`], a body takes a few more reads instead (a few µs).
//! - **The router materialized once.** `axum::serve` turns every route into a service again for
//!   each new connection (about 10 KB of maps and boxes per connection); here it happens once
//!   and connections share it.
//! - **A cap on open connections.** At the cap the loop stops accepting until one closes, so
//!   new clients wait in the kernel's listen backlog instead of each costing a task and buffers.
//! - **A deadline on each request head** (hyper's `header_read_timeout`, which also ends a
//!   kept-alive connection that starts no next request): a client that opens connections and
//!   sends nothing, or a byte at a time, holds a slot for that long at most.
//! - `TCP_NODELAY` on accepted sockets.
//!
//! Graceful shutdown as with `axum::serve`: stop accepting, let the requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Largest read buffer of one connection, and so the largest request head (headers) accepted:
/// hyper's minimum, 8 KiB, as nginx's default header buffer. The edges' request heads are a
/// few hundred bytes; at 16 KiB the peak RSS of 1000 concurrent turns was 13 MiB higher.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

use crate::ServerLimits;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for open connections
/// to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Every route becomes a ready service here, once (what `axum::serve` redoes per connection).
    let router = router.with_state(());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(READ_BUFFER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first byte are not requests in flight: at shutdown
    // they close at once instead of holding it up for the read deadline.
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(error) => {
                    wait_after_accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole; Nagle would only add delay.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte_timeout = limits.header_read_timeout;
        let stop_signal = stop_signal.clone();
        tokio::spawn(async move {
            if first_byte_arrives(&stream, first_byte_timeout, stop_signal).await {
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection).await {
                    tracing::trace!(%error, "connection ended with an error");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// Whether the client sends a byte within `timeout` (and before shutdown). hyper's head
/// deadline starts once it knows the protocol, and telling HTTP/1 from HTTP/2 waits for the
/// first bytes without one: a client that connects and sends nothing would hold its slot
/// forever. (`readable()` can report a fresh socket ready with nothing to read; a peek cannot.)
async fn first_byte_arrives(
    stream: &tokio::net::TcpStream,
    timeout: Duration,
    mut stop_signal: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(timeout, stream.peek(&mut first)) => peeked,
        _ = stop_signal.changed() => return false,
    };
    match peeked {
        Ok(Ok(read)) => read > 0,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!("a client sent nothing within the read deadline");
            false
        }
    }
}

/// As `axum::serve` and hyper 0.14 did: a peer's reset is nothing; anything else (usually
/// EMFILE, out of file descriptors) is logged and accepting pauses for a second rather than
/// spinning.
async fn wait_after_accept_error(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

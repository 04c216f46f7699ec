//! The server's limits against real sockets on loopback: a body over the limit is 413, a body
//! that does not arrive in time is 408, a head that does not arrive in time closes the
//! connection, the connection cap makes the next client wait for a free slot, and 500 stalled
//! clients do not keep real requests from being served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use slc_serve::{BodyLimits, ServerLimits};

struct Server {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(server: ServerLimits, body: BodyLimits) -> Server {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|bytes: axum::body::Bytes| async move { bytes.len().to_string() }),
        )
        .layer(axum::middleware::from_fn_with_state(
            body,
            slc_serve::read_body,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(slc_serve::serve(listener, router, server, async move {
        let _ = stopped.await;
    }));
    Server {
        address,
        stop: Some(stop),
    }
}

fn limits(max_connections: usize, timeout: Duration) -> (ServerLimits, BodyLimits) {
    (
        ServerLimits {
            max_connections,
            header_read_timeout: timeout,
        },
        BodyLimits {
            max_bytes: 1024,
            deadline: timeout,
        },
    )
}

/// Sends `bytes` on a new connection and returns whatever comes back before it closes.
fn exchange(address: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

fn get_healthz(address: SocketAddr) -> String {
    exchange(
        address,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_late_bodies_are_refused_as_json() {
    let (server, body) = limits(16, Duration::from_millis(300));
    let server = start(server, body).await;
    let address = server.address;
    tokio::task::spawn_blocking(move || {
        let big = format!(
            "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\nconnection: close\r\n\r\n{}",
            "x".repeat(2000)
        );
        let reply = exchange(address, big.as_bytes());
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains(r#""type":"payload_too_large""#), "{reply}");

        // Ten of the hundred announced bytes, then nothing.
        let started = Instant::now();
        let reply = exchange(
            address,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",
        );
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains(r#""type":"request_timeout""#), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(10));

        let ok = exchange(
            address,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        );
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with('5'), "{ok}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_that_never_completes_loses_its_connection() {
    let (server, body) = limits(16, Duration::from_millis(300));
    let server = start(server, body).await;
    let address = server.address;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let reply = exchange(address, b"GET /healthz HTTP/1.1\r\nhost: x\r\n");
        // Closed (hyper may answer 408 first); well before the client's own 20 s timeout.
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_the_next_client_waits_for_a_free_slot() {
    let (server, body) = limits(2, Duration::from_millis(500));
    let server = start(server, body).await;
    let address = server.address;
    tokio::task::spawn_blocking(move || {
        // Two clients that connect and say nothing hold both slots until the head deadline.
        let idle: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let reply = get_healthz(address);
        let waited = started.elapsed();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "{reply:?} after {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(250),
            "served at once ({waited:?}): the cap did not hold"
        );
        drop(idle);
        let started = Instant::now();
        assert!(get_healthz(address).starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() < Duration::from_millis(400));
    })
    .await
    .unwrap();
}

/// 500 clients stall (half never finish their head, half never finish their body) while 200
/// real requests are served; the stalled ones are cut off at the deadline. Prints the real
/// requests' latency (p50, p99).
#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_stalled_clients_do_not_starve_real_requests() {
    let (server, body) = limits(1024, Duration::from_secs(5));
    let server = start(server, body).await;
    let address = server.address;
    tokio::task::spawn_blocking(move || {
        let mut stalled = Vec::new();
        for index in 0..500 {
            let mut stream = TcpStream::connect(address).unwrap();
            let partial: &[u8] = if index % 2 == 0 {
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: "
            } else {
                b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nxx"
            };
            stream.write_all(partial).unwrap();
            stalled.push(stream);
        }
        let started = Instant::now();
        let mut latencies = Vec::new();
        for _ in 0..200 {
            let request = Instant::now();
            let reply = get_healthz(address);
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            latencies.push(request.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the real requests waited for the stalled clients' deadline"
        );
        latencies.sort();
        println!(
            "200 requests beside 500 stalled clients: p50 {:?}, p99 {:?}, max {:?}",
            latencies[100], latencies[197], latencies[199]
        );
        // Every stalled client is cut off at the deadline: a 408 or a closed connection.
        for mut stream in stalled {
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply);
            let reply = String::from_utf8_lossy(&reply);
            assert!(
                reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
                "{reply}"
            );
        }
    })
    .await
    .unwrap();
}

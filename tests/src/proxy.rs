//! The recording proxy the stack puts on a wire when `record` is set: every request is kept
//! whole (method, path, headers, body) and forwarded, and the response relayed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http_client;

/// One request a proxy forwarded.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

pub type Recording = Arc<Mutex<Vec<Recorded>>>;

#[derive(Clone)]
struct Proxy {
    target: String,
    recording: Recording,
    client: reqwest::Client,
}

/// A recording HTTP proxy to `target` on a free loopback port; returns its base URL.
pub(crate) async fn start_proxy(target: &str, recording: Recording) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address: SocketAddr = listener.local_addr()?;
    let proxy = Proxy {
        target: target.to_string(),
        recording,
        client: http_client(),
    };
    let router = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{address}"))
}

/// Records the request, forwards it, and relays the response (buffered: the tests read whole
/// bodies, and SSE events stay intact).
async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    proxy.recording.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.clone(),
    });
    let mut headers = HeaderMap::new();
    for (name, value) in parts.headers.iter() {
        if name != "host" && name != "content-length" {
            headers.insert(name.clone(), value.clone());
        }
    }
    let upstream = proxy
        .client
        .request(parts.method, format!("{}{path}", proxy.target))
        .headers(headers)
        .body(body)
        .send()
        .await;
    match upstream {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            let mut relayed = (status, body).into_response();
            for (name, value) in headers.iter() {
                if name != "content-length" && name != "transfer-encoding" {
                    relayed.headers_mut().insert(name.clone(), value.clone());
                }
            }
            relayed
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

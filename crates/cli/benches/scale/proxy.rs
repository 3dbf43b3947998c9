//! A counting HTTP proxy on loopback between a client under test (the agent, ESO) and OpenBao: every request is
//! forwarded as is, and the proxy records when it came and how many response body bytes went back. The client
//! under test is a separate process, so its own counters cannot be read; the HTTP layer can.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;

/// One forwarded request: when it arrived and how many response body bytes it cost.
#[derive(Clone, Copy)]
pub struct Hit {
    pub at: Instant,
    pub bytes: u64,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    hits: Arc<Mutex<Vec<Hit>>>,
}

pub struct CountingProxy {
    pub addr: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `upstream` (an `http://` OpenBao address).
    pub async fn start(upstream: &str) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the counting proxy on loopback");
        let addr = format!("http://{}", listener.local_addr().expect("proxy address"));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            hits: hits.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(shared);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingProxy { addr, hits }
    }

    /// Forgets what was counted so far (the start of a measuring window).
    pub fn reset(&self) {
        self.hits.lock().expect("proxy counters").clear();
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("proxy counters").clone()
    }
}

/// Requests grouped into polls: a gap longer than `gap` starts a new poll. Returns (polls, requests, bytes).
pub fn polls(hits: &[Hit], gap: Duration) -> (usize, usize, u64) {
    let mut polls = 0;
    let mut last: Option<Instant> = None;
    for h in hits {
        if last.is_none_or(|l| h.at.duration_since(l) > gap) {
            polls += 1;
        }
        last = Some(h.at);
    }
    (polls, hits.len(), hits.iter().map(|h| h.bytes).sum())
}

async fn forward(State(s): State<Shared>, req: Request) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Ok(body) = to_bytes(body, 64 << 20).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let mut out = s
        .client
        .request(parts.method, format!("{}{path}", s.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let Ok(answer) = out.send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = answer.status();
    let headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    s.hits.lock().expect("proxy counters").push(Hit {
        at,
        bytes: bytes.len() as u64,
    });
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = code;
    for (name, value) in &headers {
        let skip = [
            HeaderName::from_static("content-length"),
            HeaderName::from_static("transfer-encoding"),
            HeaderName::from_static("connection"),
        ];
        if !skip.contains(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

//! Health, readiness and Prometheus metrics over HTTP (axum routes on hyper's HTTP/1 server).
//!
//! Each connection serves one request and has a hard deadline, so a slow or silent client holds one of a
//! bounded number of slots for a few seconds at most; the probes and scrapers that call this are cheap to reconnect.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use meshtrust_core::plan::Action;
use meshtrust_engine::EngineError;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::{CONTENT_TYPE, Metrics, error_kind};

/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection (one request and its answer) may take.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once rather than queued.
const MAX_CONNECTIONS: usize = 64;
/// Pause after a failed accept (for example, out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// On shutdown, how long requests in flight may take to finish.
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Readiness {
    ready: bool,
    reason: String,
}

#[derive(Debug)]
struct Inner {
    readiness: Mutex<Readiness>,
    metrics: Metrics,
}

/// Shared between the loop (which records) and the HTTP endpoint (which reports).
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(Inner {
            readiness: Mutex::new(Readiness {
                ready: false,
                reason: "no reconcile round has finished yet".into(),
            }),
            metrics: Metrics::default(),
        }))
    }
}

/// The health endpoint could not open its address.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot serve /healthz, /readyz and /metrics on {addr}: the address is already in use (another agent or program holds it); pick a free port with --listen 127.0.0.1:<other port>"
    )]
    InUse { addr: SocketAddr },
    #[error(
        "cannot serve /healthz, /readyz and /metrics on {addr}: {source}; pick another address with --listen"
    )]
    Other {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Health {
    fn readiness<T>(&self, f: impl FnOnce(&mut Readiness) -> T) -> T {
        let mut guard = match self.0.readiness.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// A round that ended without error, `seconds` after it started.
    pub fn success(&self, now: i64, seconds: f64) {
        self.readiness(|r| {
            r.ready = true;
            r.reason.clear();
        });
        self.0.metrics.success(now, seconds);
    }

    pub fn failure(&self, error: &EngineError) {
        self.readiness(|r| {
            r.ready = false;
            r.reason = error.to_string();
        });
        self.0.metrics.failure(error_kind(error));
    }

    /// One change applied (counted as it happens, even if the round fails later).
    pub fn wrote(&self, action: &Action) {
        self.0.metrics.wrote(action);
    }

    pub fn set_leader(&self, leader: bool) {
        if !leader {
            // A standby that can reach its Lease is healthy; only the leader's rounds decide readiness.
            self.readiness(|r| {
                r.ready = true;
                r.reason = "standby".into();
            });
        }
        self.0.metrics.set_leader(leader);
    }

    pub fn set_expiry(&self, object: &str, not_after: i64) {
        self.0
            .metrics
            .horizons()
            .set_certificate_expiry(object, not_after);
    }

    pub fn set_token_expiry(&self, not_after: i64, ttl: i64) {
        self.0.metrics.horizons().set_token_expiry(not_after, ttl);
    }

    /// The gauges a round's observation sets beyond expiry of `cacerts` (root expiry, peers' remote secrets).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn is_ready(&self) -> bool {
        self.readiness(|r| r.ready)
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }

    /// Binds `addr` and serves until [`Server::shutdown`] (or until the [`Server`] is dropped).
    pub async fn listen(&self, addr: SocketAddr) -> Result<Server, ListenError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ListenError::InUse { addr }
            } else {
                ListenError::Other { addr, source }
            }
        })?;
        let local = listener
            .local_addr()
            .map_err(|source| ListenError::Other { addr, source })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, self.router(), async {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        Ok(Server {
            addr: local,
            stop,
            task,
        })
    }
}

async fn readyz(State(health): State<Health>) -> Response {
    health.readiness(|r| {
        if r.ready {
            (StatusCode::OK, "ready\n".to_string()).into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", r.reason),
            )
                .into_response()
        }
    })
}

async fn metrics(State(health): State<Health>) -> Response {
    match health.0.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

/// A running health endpoint.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// The bound address (the actual port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish for up to two seconds, then closes the rest.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("health endpoint: too many connections; closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "health endpoint: connection failed"),
                Err(_) => tracing::debug!("health endpoint: connection ran past its deadline"),
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    // Dropping the set aborts whatever is still running.
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrust_core::ports::{ErrorKind, PortError, System};
    use prometheus_parse::{Scrape, Value};

    async fn get(server: &Server, path: &str) -> (u16, String, String) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let response = client
            .get(format!("http://{}{path}", server.local_addr()))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, content_type, response.text().await.expect("body"))
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn sample<'a>(scrape: &'a Scrape, name: &str, label: Option<(&str, &str)>) -> &'a Value {
        &scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
            .value
    }

    fn number(value: &Value) -> f64 {
        match value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("not a number: {other:?}"),
        }
    }

    #[tokio::test]
    async fn serves_health_readiness_and_parseable_metrics() {
        let health = Health::default();
        let server = health.listen(loopback()).await.expect("listen");

        assert_eq!(get(&server, "/healthz").await.0, 200);
        let (status, _, body) = get(&server, "/readyz").await;
        assert_eq!(status, 503);
        assert!(
            body.contains("no reconcile round has finished yet"),
            "{body}"
        );

        let outage = EngineError::Port(PortError::new(
            System::OpenBao,
            ErrorKind::Unavailable,
            "read the change index",
            "connection refused",
        ));
        health.failure(&outage);
        let (status, _, body) = get(&server, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("connection refused"), "{body}");

        health.set_leader(true);
        health.wrote(&Action::WritePolicy {
            name: "meshtrust-agent-a".into(),
        });
        for seconds in [0.003, 0.2, 4.0] {
            health.success(1_700_000_000, seconds);
        }
        health.set_expiry("cacerts", 42);
        assert_eq!(get(&server, "/readyz").await.0, 200);

        let (status, content_type, text) = get(&server, "/metrics").await;
        assert_eq!(status, 200);
        assert!(content_type.starts_with("application/openmetrics-text"));
        let scrape =
            Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
        let Value::Histogram(buckets) =
            sample(&scrape, "meshtrust_reconcile_duration_seconds", None)
        else {
            panic!("the reconcile duration must be a histogram:\n{text}");
        };
        assert!(buckets.len() >= 10, "{buckets:?}");
        let within = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(within(0.01), Some(1.0));
        assert_eq!(within(0.25), Some(2.0));
        assert_eq!(within(f64::INFINITY), Some(3.0));
        // OpenMetrics names a counter's family without `_total`, so this parser reads the samples as untyped.
        assert_eq!(
            number(sample(&scrape, "meshtrust_reconciles_total", None)),
            4.0
        );
        assert_eq!(
            number(sample(
                &scrape,
                "meshtrust_reconcile_errors_total",
                Some(("kind", "openbao"))
            )),
            1.0
        );
        assert_eq!(
            number(sample(
                &scrape,
                "meshtrust_reconcile_errors_total",
                Some(("kind", "kubernetes"))
            )),
            0.0
        );
        assert_eq!(number(sample(&scrape, "meshtrust_writes_total", None)), 1.0);
        assert_eq!(
            number(sample(
                &scrape,
                "meshtrust_writes_by_kind_total",
                Some(("kind", "writePolicy"))
            )),
            1.0
        );
        assert_eq!(number(sample(&scrape, "meshtrust_leader", None)), 1.0);
        assert_eq!(
            number(sample(
                &scrape,
                "meshtrust_certificate_expiry_timestamp_seconds",
                Some(("secret", "cacerts"))
            )),
            42.0
        );
        assert_eq!(
            number(sample(
                &scrape,
                "meshtrust_last_success_timestamp_seconds",
                None
            )),
            1_700_000_000.0
        );
        // The lines the CLI's agent test reads by prefix.
        assert!(text.lines().any(|l| l == "meshtrust_leader 1"), "{text}");
        assert!(
            text.lines().any(|l| l == "meshtrust_writes_total 1"),
            "{text}"
        );

        assert_eq!(get(&server, "/nope").await.0, 404);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let first = Health::default().listen(loopback()).await.expect("listen");
        let taken = first.local_addr();
        let error = Health::default()
            .listen(taken)
            .await
            .expect_err("the port is taken");
        let message = error.to_string();
        assert!(matches!(error, ListenError::InUse { .. }), "{message}");
        assert!(message.contains(&taken.to_string()), "{message}");
        assert!(message.contains("--listen 127.0.0.1:"), "{message}");
        first.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_requests_or_shutdown() {
        let health = Health::default();
        let server = health.listen(loopback()).await.expect("listen");
        // Connects and never sends a request head.
        let _silent = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        assert_eq!(get(&server, "/healthz").await.0, 200);
        let started = std::time::Instant::now();
        server.shutdown().await;
        assert!(started.elapsed() <= DRAIN + Duration::from_millis(500));
    }

    #[tokio::test]
    async fn the_connection_closes_after_the_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Probes that read to the end of the stream (like the CLI tests) must see it end.
        let server = Health::default().listen(loopback()).await.expect("listen");
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut out))
            .await
            .expect("the server closes the connection")
            .expect("read");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        server.shutdown().await;
    }
}

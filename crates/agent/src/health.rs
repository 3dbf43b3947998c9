//! Health, readiness and Prometheus metrics over a minimal HTTP/1.1 endpoint (GET only, no keep-alive).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Default)]
struct State {
    ready: bool,
    reason: String,
    reconciles: u64,
    errors: u64,
    writes: u64,
    last_success: i64,
    leader: bool,
    last_duration_seconds: f64,
    expiry: BTreeMap<String, i64>,
}

/// Shared between the loop (which records) and the HTTP endpoint (which reports).
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub fn success(&self, now: i64, seconds: f64, writes: usize) {
        self.with(|s| {
            s.ready = true;
            s.reason.clear();
            s.reconciles += 1;
            s.writes += writes as u64;
            s.last_success = now;
            s.last_duration_seconds = seconds;
        });
    }

    pub fn failure(&self, reason: String) {
        self.with(|s| {
            s.ready = false;
            s.reason = reason;
            s.reconciles += 1;
            s.errors += 1;
        });
    }

    pub fn set_leader(&self, leader: bool) {
        self.with(|s| {
            s.leader = leader;
            if !leader {
                // A standby that can reach its Lease is healthy; only the leader's rounds decide readiness.
                s.ready = true;
                s.reason = "standby".into();
            }
        });
    }

    pub fn set_expiry(&self, object: &str, not_after: i64) {
        self.with(|s| {
            s.expiry.insert(object.to_string(), not_after);
        });
    }

    pub fn is_ready(&self) -> bool {
        self.with(|s| s.ready)
    }

    fn metrics(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            out.push_str("# HELP meshtrust_leader 1 if this replica holds the Lease and writes.\n# TYPE meshtrust_leader gauge\n");
            out.push_str(&format!("meshtrust_leader {}\n", u8::from(s.leader)));
            out.push_str("# HELP meshtrust_reconciles_total Reconcile rounds run.\n# TYPE meshtrust_reconciles_total counter\n");
            out.push_str(&format!("meshtrust_reconciles_total {}\n", s.reconciles));
            out.push_str("# HELP meshtrust_reconcile_errors_total Reconcile rounds that failed.\n# TYPE meshtrust_reconcile_errors_total counter\n");
            out.push_str(&format!("meshtrust_reconcile_errors_total {}\n", s.errors));
            out.push_str("# HELP meshtrust_writes_total Changes applied.\n# TYPE meshtrust_writes_total counter\n");
            out.push_str(&format!("meshtrust_writes_total {}\n", s.writes));
            out.push_str("# HELP meshtrust_reconcile_duration_seconds Duration of the last reconcile.\n# TYPE meshtrust_reconcile_duration_seconds gauge\n");
            out.push_str(&format!("meshtrust_reconcile_duration_seconds {}\n", s.last_duration_seconds));
            out.push_str("# HELP meshtrust_last_success_timestamp_seconds When the last reconcile succeeded.\n# TYPE meshtrust_last_success_timestamp_seconds gauge\n");
            out.push_str(&format!("meshtrust_last_success_timestamp_seconds {}\n", s.last_success));
            out.push_str("# HELP meshtrust_certificate_expiry_timestamp_seconds Expiry of the CA in each managed cacerts.\n# TYPE meshtrust_certificate_expiry_timestamp_seconds gauge\n");
            for (object, t) in &s.expiry {
                out.push_str(&format!("meshtrust_certificate_expiry_timestamp_seconds{{secret=\"{object}\"}} {t}\n"));
            }
            out
        })
    }

    fn respond(&self, path: &str) -> (u16, String) {
        match path {
            "/healthz" => (200, "ok\n".into()),
            "/readyz" => self.with(|s| {
                if s.ready {
                    (200, "ready\n".into())
                } else {
                    (503, format!("not ready: {}\n", s.reason))
                }
            }),
            "/metrics" => (200, self.metrics()),
            _ => (404, "not found\n".into()),
        }
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let health = self.clone();
            tokio::spawn(async move {
                // Read the whole request head before answering: closing with unread bytes makes the
                // kernel reset the connection under the client.
                let mut buf = [0u8; 2048];
                let mut n = 0;
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = health.respond(path);
                let reason = match status {
                    200 => "OK",
                    503 => "Service Unavailable",
                    _ => "Not Found",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let health = Health::default();
        tokio::spawn(health.clone().serve(listener));
        assert!(get(port, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.success(1, 0.5, 2);
        health.set_expiry("cacerts", 42);
        assert!(get(port, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(port, "/metrics").await;
        assert!(metrics.contains("meshtrust_writes_total 2"), "{metrics}");
        assert!(
            metrics
                .contains("meshtrust_certificate_expiry_timestamp_seconds{secret=\"cacerts\"} 42")
        );
        assert!(get(port, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshtrust_core::ports::{ErrorKind, PortError, PortResult, System};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::OpenBaoConfig;

/// An OpenBao answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Value,
}

#[derive(Clone)]
pub struct OpenBaoClient {
    http: reqwest::Client,
    config: Arc<OpenBaoConfig>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for OpenBaoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBaoClient")
            .field("config", &self.config)
            .finish()
    }
}

pub(crate) fn error(kind: ErrorKind, operation: &str, message: impl Into<String>) -> PortError {
    PortError::new(System::OpenBao, kind, operation, message)
}

impl OpenBaoClient {
    pub fn new(config: OpenBaoConfig) -> PortResult<Self> {
        let http = http_client(&config, Duration::from_secs(30))?;
        Ok(Self {
            http,
            config: Arc::new(config),
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn namespace(&self) -> Option<&str> {
        self.config.namespace.as_deref()
    }

    pub fn address(&self) -> &str {
        &self.config.address
    }

    /// How many HTTP requests this client (and its clones) made: tests use it to prove polls are cheap.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The same server with a shorter per-request timeout, so a hung server is noticed sooner.
    pub fn with_timeout(&self, timeout: Duration) -> PortResult<Self> {
        Ok(Self {
            http: http_client(&self.config, timeout)?,
            config: self.config.clone(),
            requests: self.requests.clone(),
        })
    }

    /// The same server, another token (an agent's login result).
    pub fn with_token(&self, token: String) -> Self {
        let mut config = (*self.config).clone();
        config.token = token;
        Self {
            http: self.http.clone(),
            config: Arc::new(config),
            requests: self.requests.clone(),
        }
    }

    /// One API call. `path` is relative to `/v1/`. Errors carry OpenBao's own message, never the request body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PortResult<Response> {
        self.call_in(self.config.namespace.as_deref(), method, path, body)
            .await
    }

    /// A call in an explicit namespace (`None`: the root namespace), for managing namespaces themselves.
    pub async fn call_in(
        &self,
        namespace: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PortResult<Response> {
        let operation = format!("{method} {path}");
        let url = format!("{}/v1/{path}", self.config.address);
        let mut request = self
            .http
            .request(method, &url)
            .header("X-Vault-Token", &self.config.token);
        if let Some(ns) = namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| {
            error(
                ErrorKind::Unavailable,
                &operation,
                format!(
                    "cannot reach OpenBao at {} ({}); check BAO_ADDR and that the server is up",
                    self.config.address,
                    root_cause(&e)
                ),
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Ok(Response { status, body })
    }

    /// Like [`call`](Self::call), but a non-2xx answer becomes an error (404 included).
    pub async fn call_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PortResult<Value> {
        let operation = format!("{method} {path}");
        let response = self.call(method, path, body).await?;
        check(&operation, response)
    }
}

/// The HTTP client for `config`: its CA bundle if any, and a bound on every request.
fn http_client(config: &OpenBaoConfig, timeout: Duration) -> PortResult<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)));
    if let Some(pem) = &config.ca_cert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            error(
                ErrorKind::Invalid,
                "load BAO_CACERT",
                format!("not a PEM CA bundle: {e}"),
            )
        })?;
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| error(ErrorKind::Invalid, "build HTTP client", e.to_string()))
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// OpenBao's `{"errors": [...]}` as one line.
pub(crate) fn messages(body: &Value) -> String {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no error message".into())
}

pub(crate) fn check(operation: &str, response: Response) -> PortResult<Value> {
    let status = response.status;
    if status.is_success() {
        return Ok(response.body);
    }
    let msg = messages(&response.body);
    Err(match status {
        StatusCode::FORBIDDEN => error(
            ErrorKind::Denied,
            operation,
            format!(
                "permission denied ({msg}); the token's policies do not allow this, see `meshtrust bao policies`"
            ),
        ),
        StatusCode::UNAUTHORIZED => error(
            ErrorKind::Denied,
            operation,
            format!("not authenticated ({msg}); check BAO_TOKEN"),
        ),
        StatusCode::NOT_FOUND => {
            error(ErrorKind::NotFound, operation, format!("not found ({msg})"))
        }
        s if s.is_server_error() => error(
            ErrorKind::Unavailable,
            operation,
            format!("OpenBao answered {s}: {msg}"),
        ),
        s => error(
            ErrorKind::Invalid,
            operation,
            format!("OpenBao answered {s}: {msg}"),
        ),
    })
}

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshtrust_core::ports::{ErrorKind, PortError, PortResult, System};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::OpenBaoConfig;
use consistency::ReadYourWrites;
use server::ServerInfo;

mod consistency;
mod json_limits;
mod redirect;
pub(crate) mod server;

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
    /// Every node to try (`address` first); `current` is the one that last answered.
    nodes: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    requests: Arc<AtomicU64>,
    response_bytes: Arc<AtomicU64>,
    /// Read-your-writes through HA standby nodes, shared by clones.
    consistency: Arc<ReadYourWrites>,
    /// What `sys/health` said the server is, once asked; shared by clones.
    server: Arc<Mutex<Option<ServerInfo>>>,
}

/// No answer meshtrust reads comes near this; a larger one is refused rather than buffered.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

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
        config.check_transport()?;
        let http = http_client(&config, Duration::from_secs(30))?;
        Ok(Self {
            http,
            nodes: Arc::new(config.candidates()),
            current: Arc::new(AtomicUsize::new(0)),
            config: Arc::new(config),
            requests: Arc::new(AtomicU64::new(0)),
            response_bytes: Arc::new(AtomicU64::new(0)),
            consistency: Arc::new(ReadYourWrites::default()),
            server: Arc::new(Mutex::new(None)),
        })
    }

    pub fn namespace(&self) -> Option<&str> {
        self.config.namespace.as_deref()
    }

    /// The node in use: the configured address, or after a failover the HA node that answered last.
    pub fn address(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.nodes.len().max(1);
        self.nodes
            .get(i)
            .map_or(&self.config.address, String::as_str)
    }

    /// How many HTTP requests this client (and its clones) made: tests use it to prove polls are cheap.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// How many bytes of answers this client (and its clones) received, counted as they arrive.
    pub fn response_bytes(&self) -> u64 {
        self.response_bytes.load(Ordering::Relaxed)
    }

    /// The same server with a shorter per-request timeout, so a hung server is noticed sooner.
    pub fn with_timeout(&self, timeout: Duration) -> PortResult<Self> {
        Ok(Self {
            http: http_client(&self.config, timeout)?,
            config: self.config.clone(),
            nodes: self.nodes.clone(),
            current: self.current.clone(),
            requests: self.requests.clone(),
            response_bytes: self.response_bytes.clone(),
            consistency: self.consistency.clone(),
            server: self.server.clone(),
        })
    }

    /// The same server, another token (an agent's login result).
    pub fn with_token(&self, token: String) -> Self {
        let mut config = (*self.config).clone();
        config.token = token;
        Self {
            http: self.http.clone(),
            config: Arc::new(config),
            nodes: self.nodes.clone(),
            current: self.current.clone(),
            requests: self.requests.clone(),
            response_bytes: self.response_bytes.clone(),
            consistency: self.consistency.clone(),
            server: self.server.clone(),
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
    /// With a namespace anywhere in play (this call's or the client's), the server must have namespaces:
    /// community Vault ignores `X-Vault-Namespace`, so nothing is sent to it before that is checked.
    pub async fn call_in(
        &self,
        namespace: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PortResult<Response> {
        if let Some(ns) = namespace.or(self.config.namespace.as_deref()) {
            self.require_namespaces(ns).await?;
        }
        let response = self.exchange(namespace, method.clone(), path, body).await?;
        if self.consistency.refused(&response) {
            // The server does not take read-your-writes headers (Vault without header forwarding): they are
            // off now, and this one request is sent again without them.
            return self.exchange(namespace, method, path, body).await;
        }
        Ok(response)
    }

    /// One request and its answer, without any check of the server.
    pub(crate) async fn exchange(
        &self,
        namespace: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PortResult<Response> {
        let operation = format!("{method} {path}");
        let writes = !matches!(method.as_str(), "GET" | "LIST" | "HEAD");
        let response = self
            .send_failing_over(&operation, method, path, namespace, body)
            .await?;
        let status = response.status();
        if writes && status.is_success() {
            self.consistency.record(response.headers());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_string();
        let bytes = read_capped(response, &operation).await?;
        self.response_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let body = parse_answer(&bytes, status, &content_type, &operation)?;
        Ok(Response { status, body })
    }

    /// Sends one request to the node in use; on a connection error (the request never left) it moves on to
    /// the next node of an HA cluster, so a killed node costs one failed connect, not a failed round. A
    /// standby's redirect to the active node is followed only to a configured node.
    async fn send_failing_over(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        namespace: Option<&str>,
        body: Option<&Value>,
    ) -> PortResult<reqwest::Response> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = None;
        for step in 0..self.nodes.len().max(1) {
            let index = (first + step) % self.nodes.len().max(1);
            let address = self.nodes.get(index).unwrap_or(&self.config.address);
            match self
                .send_to(address, method.clone(), path, namespace, body)
                .await
            {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return self
                        .follow_redirect(operation, response, (method, path, namespace, body))
                        .await;
                }
                Err(e) if e.is_connect() && self.nodes.len() > 1 => last_error = Some(e),
                Err(e) => return Err(unreachable(operation, address, &e)),
            }
        }
        let address = self.address().to_string();
        Err(match last_error {
            Some(e) => unreachable(operation, &format!("any of {}", self.nodes.join(" ")), &e),
            None => unreachable_plain(operation, &address),
        })
    }

    /// One request to `address`, with the token, namespace and read-your-writes headers.
    async fn send_to(
        &self,
        address: &str,
        method: Method,
        path: &str,
        namespace: Option<&str>,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.consistency
            .require(self.request_to(address, method, path, namespace, body))
            .send()
            .await
    }

    /// One request to `address`, with the token and namespace headers; counted.
    fn request_to(
        &self,
        address: &str,
        method: Method,
        path: &str,
        namespace: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let method_is_patch = method == Method::PATCH;
        let mut request = self
            .http
            .request(method, format!("{address}/v1/{path}"))
            .header("X-Vault-Token", &self.config.token);
        if let Some(ns) = namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            // OpenBao takes a PATCH only as a JSON merge patch; `json` keeps a content type set before it.
            if method_is_patch {
                request = request.header(
                    reqwest::header::CONTENT_TYPE,
                    "application/merge-patch+json",
                );
            }
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        request
    }

    /// Sends a write, already made through the node in use, once more through every other node of an HA
    /// cluster (each forwards it to the active node), for state a node keeps in memory beside its storage.
    /// Sent without read-your-writes headers: a standby that has not caught up would forward the request
    /// without handling it itself. Best effort: returns the nodes that did not take it, with why.
    pub async fn repeat_on_other_nodes(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Vec<(String, String)> {
        let current = self.address().to_string();
        let mut missed = Vec::new();
        for node in self.nodes.iter().filter(|n| **n != current) {
            let request = self.request_to(
                node,
                method.clone(),
                path,
                self.config.namespace.as_deref(),
                Some(body),
            );
            match request.send().await {
                Ok(answer) if answer.status().is_success() => {}
                Ok(answer) => missed.push((node.clone(), format!("HTTP {}", answer.status()))),
                Err(e) => missed.push((node.clone(), root_cause(&e))),
            }
        }
        missed
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

fn unreachable(operation: &str, address: &str, e: &reqwest::Error) -> PortError {
    error(
        ErrorKind::Unavailable,
        operation,
        format!(
            "cannot reach OpenBao at {address} ({}); check BAO_ADDR (or BAO_ADDRS) and that the server is up",
            root_cause(e)
        ),
    )
}

fn unreachable_plain(operation: &str, address: &str) -> PortError {
    error(
        ErrorKind::Unavailable,
        operation,
        format!("cannot reach OpenBao at {address}; check BAO_ADDR and that the server is up"),
    )
}

/// The HTTP client for `config`: its CA bundle if any, and a bound on every request.
fn http_client(config: &OpenBaoConfig, timeout: Duration) -> PortResult<reqwest::Client> {
    // No redirects: reqwest would resend X-Vault-Token to wherever a 3xx points.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)));
    if let Some(pem) = &config.ca_cert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            error(
                ErrorKind::Invalid,
                "load OpenBao's CA (BAO_CACERT, or openbao.caCert in the mesh file)",
                format!("not a PEM CA bundle: {e}"),
            )
        })?;
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| error(ErrorKind::Invalid, "build HTTP client", e.to_string()))
}

/// Reads the body chunk by chunk, refusing more than [`MAX_ANSWER_BYTES`]; a body that breaks off or stalls
/// past the request timeout is an error, never an empty answer.
async fn read_capped(mut response: reqwest::Response, operation: &str) -> PortResult<Vec<u8>> {
    let too_big = || {
        error(
            ErrorKind::Invalid,
            operation,
            format!(
                "the answer is larger than {} MiB, far beyond anything OpenBao sends meshtrust; check BAO_ADDR",
                MAX_ANSWER_BYTES >> 20
            ),
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            error(
                ErrorKind::Unavailable,
                operation,
                format!(
                    "the answer broke off or stalled ({}); OpenBao may be overloaded, try again",
                    root_cause(&e)
                ),
            )
        })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
}

/// OpenBao answers JSON (or nothing, for 204). Anything else on a success status means BAO_ADDR points at
/// something that is not OpenBao, and must not be read as "absent".
fn parse_answer(
    bytes: &[u8],
    status: StatusCode,
    content_type: &str,
    operation: &str,
) -> PortResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(body) => Ok(body),
        Err(_) if !status.is_success() => Ok(Value::Null),
        Err(e) => Err(error(
            ErrorKind::Invalid,
            operation,
            format!(
                "OpenBao answered {status} with {} bytes of {content_type} that are not JSON ({e}); check that BAO_ADDR points at OpenBao",
                bytes.len()
            ),
        )),
    }
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
        // Vault refuses a body over its listener's JSON limits with 500; sending it again cannot help.
        s if json_limits::refused_body(&msg) => json_limits::error_for(operation, s, &msg),
        // 429: rate limited, or a standby that cannot yet answer consistently; a moment later it can.
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => error(
            ErrorKind::Unavailable,
            operation,
            format!("OpenBao answered {s}: {msg}"),
        ),
        // A KV v2 mount refuses requests for about a second after it is created (longer on a standby).
        s if msg.contains("upgrade from non-versioned to versioned") => error(
            ErrorKind::Unavailable,
            operation,
            format!(
                "OpenBao answered {s}: the KV mount was just created and is still upgrading itself ({msg}); \
                 it is ready within seconds, run again"
            ),
        ),
        s => error(
            ErrorKind::Invalid,
            operation,
            format!("OpenBao answered {s}: {msg}"),
        ),
    })
}

#[cfg(test)]
pub(crate) mod answer_props;
#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests {
    use super::*;

    fn answering_node() -> String {
        test_server::answering("{}")
    }

    /// An address nothing listens on.
    fn dead_node() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refused_connection_moves_on_to_the_next_node_and_stays_there() {
        let (dead, live) = (dead_node(), answering_node());
        let client = OpenBaoClient::new(OpenBaoConfig {
            address: dead.clone(),
            addresses: vec![dead.clone(), live.clone()],
            token: String::new(),
            namespace: None,
            ca_cert_pem: None,
            allow_insecure_http: false,
        })
        .expect("client");
        assert_eq!(client.address(), dead);
        let answer = client
            .call(Method::GET, "sys/health", None)
            .await
            .expect("the live node answers");
        assert!(answer.status.is_success());
        assert_eq!(
            client.address(),
            live,
            "the client stays on the node that answered"
        );
        assert_eq!(client.request_count(), 2);
    }

    #[test]
    fn a_kv_mount_still_upgrading_or_a_429_is_unavailable_not_invalid() {
        let upgrading = Response {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({"errors": ["Waiting for the primary to upgrade from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service when the primary is finished."]}),
        };
        let e = check("PUT secret/data/x", upgrading).expect_err("not ready");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.to_string().contains("run again"), "{e}");
        let busy = Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: serde_json::json!({"errors": []}),
        };
        assert_eq!(
            check("GET x", busy).expect_err("busy").kind,
            ErrorKind::Unavailable
        );
        let bad = Response {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({"errors": ["invalid role name"]}),
        };
        assert_eq!(
            check("POST x", bad).expect_err("bad").kind,
            ErrorKind::Invalid
        );
    }

    #[tokio::test]
    async fn with_every_node_down_the_error_names_them_all() {
        let (a, b) = (dead_node(), dead_node());
        let client = OpenBaoClient::new(OpenBaoConfig {
            address: a.clone(),
            addresses: vec![a.clone(), b.clone()],
            token: String::new(),
            namespace: None,
            ca_cert_pem: None,
            allow_insecure_http: false,
        })
        .expect("client");
        let e = client
            .call(Method::GET, "sys/health", None)
            .await
            .expect_err("no node answers")
            .to_string();
        assert!(
            e.contains(&a) && e.contains(&b) && e.contains("BAO_ADDRS"),
            "{e}"
        );
    }
}

//! The interfaces meshtrust's engine needs from the outside world. The OpenBao and Kubernetes clients implement
//! them; unit tests implement them in memory.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::duration::Span;
use crate::mesh::KeySpec;
use crate::secret::SecretBytes;

/// Which system an error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum System {
    OpenBao,
    Cluster(String),
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            System::OpenBao => f.write_str("OpenBao"),
            System::Cluster(name) => write!(f, "cluster {name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object changed since it was read (check-and-set or resourceVersion conflict), or already exists.
    Conflict,
    /// Authentication or authorization refused the call.
    Denied,
    /// The server could not be reached or answered 5xx.
    Unavailable,
    /// The request or the answer was malformed.
    Invalid,
    NotFound,
}

/// An error from OpenBao or a cluster, with the operation it concerned. It never carries request bodies,
/// so key material cannot leak through it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{system}: {operation}: {message}")]
pub struct PortError {
    pub system: System,
    pub kind: ErrorKind,
    pub operation: String,
    pub message: String,
}

impl PortError {
    pub fn new(
        system: System,
        kind: ErrorKind,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PortError {
            system,
            kind,
            operation: operation.into(),
            message: message.into(),
        }
    }
}

pub type PortResult<T> = Result<T, PortError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub kind: String,
    pub max_lease_ttl: u64,
}

#[derive(Debug, Clone)]
pub struct IssuerInfo {
    pub issuer_id: String,
    pub issuer_name: String,
    pub key_id: String,
    pub certificate_pem: String,
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key_type: String,
    /// True when OpenBao answers with no private key for it: an `internal` key that never leaves OpenBao.
    pub internal: bool,
}

#[derive(Debug, Clone)]
pub struct RootRequest {
    pub issuer_name: String,
    pub common_name: String,
    pub organization: String,
    pub key: KeySpec,
    pub ttl: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerateOutcome {
    Created,
    /// An issuer with that name already exists (another apply won the race).
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub struct SignRequest {
    pub csr_pem: String,
    pub common_name: String,
    pub organization: String,
    pub ttl: Span,
}

#[derive(Debug, Clone)]
pub struct SignedCertificate {
    pub certificate_pem: String,
    pub issuing_ca_pem: String,
    pub serial: String,
}

#[derive(Debug, Clone)]
pub struct KvEntry {
    pub data: BTreeMap<String, SecretBytes>,
    pub version: u64,
}

#[async_trait]
pub trait OpenBao: Send + Sync {
    async fn mount(&self, path: &str) -> PortResult<Option<MountInfo>>;
    async fn enable_mount(
        &self,
        path: &str,
        kind: &str,
        max_lease_ttl: Option<Span>,
    ) -> PortResult<()>;
    async fn tune_mount(&self, path: &str, max_lease_ttl: Span) -> PortResult<()>;
    async fn list_issuers(&self, pki: &str) -> PortResult<Vec<IssuerInfo>>;
    async fn key_info(&self, pki: &str, key_id: &str) -> PortResult<KeyInfo>;
    async fn generate_root(&self, pki: &str, request: &RootRequest) -> PortResult<GenerateOutcome>;
    async fn sign_intermediate(
        &self,
        pki: &str,
        issuer: &str,
        request: &SignRequest,
    ) -> PortResult<SignedCertificate>;
    async fn kv_get(&self, mount: &str, path: &str) -> PortResult<Option<KvEntry>>;
    /// Writes with check-and-set: `cas = 0` creates only; otherwise the write succeeds only at that version.
    async fn kv_put(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, SecretBytes>,
        cas: u64,
    ) -> PortResult<u64>;
    /// The configured OpenBao namespace exists (asked of its parent namespace).
    async fn namespace_exists(&self, namespace: &str) -> PortResult<bool>;
    async fn create_namespace(&self, namespace: &str) -> PortResult<()>;
    /// The auth method type mounted at `auth/<path>`, if any.
    async fn auth_mount(&self, path: &str) -> PortResult<Option<String>>;
    async fn enable_auth(&self, path: &str, kind: &str) -> PortResult<()>;
    /// A plain read of a configuration path; `None` when absent.
    async fn read(&self, path: &str) -> PortResult<Option<serde_json::Value>>;
    async fn write(&self, path: &str, body: &serde_json::Value) -> PortResult<()>;
    async fn read_policy(&self, name: &str) -> PortResult<Option<String>>;
    async fn write_policy(&self, name: &str, text: &str) -> PortResult<()>;
    /// Deletes every version and the metadata of a KV v2 entry.
    async fn kv_delete(&self, mount: &str, path: &str) -> PortResult<()>;
}

/// The other kinds of object meshtrust owns (the reader identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
}

/// A Kubernetes object other than a Secret: its labels, resourceVersion and the fields beside `metadata`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeObject {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub resource_version: Option<String>,
    /// Everything but `apiVersion`, `kind` and `metadata` (for example `rules`, or `roleRef` and `subjects`).
    pub body: serde_json::Value,
}

/// A Kubernetes Secret, reduced to what meshtrust reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretObject {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, SecretBytes>,
    pub type_: Option<String>,
    /// Set on objects read from the cluster; writes use it as a precondition.
    pub resource_version: Option<String>,
}

#[async_trait]
pub trait Cluster: Send + Sync {
    fn name(&self) -> &str;
    /// The API server URL this client talks to.
    fn server(&self) -> &str;
    /// The CA that signs the API server's certificate, from the kubeconfig.
    fn api_ca_pem(&self) -> Option<&str>;
    async fn namespace_exists(&self, namespace: &str) -> PortResult<bool>;
    async fn create_namespace(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> PortResult<()>;
    async fn get_secret(&self, namespace: &str, name: &str) -> PortResult<Option<SecretObject>>;
    /// Creates; `Conflict` if it exists.
    async fn create_secret(&self, secret: &SecretObject) -> PortResult<SecretObject>;
    /// Replaces, conditional on `secret.resource_version`; `Conflict` if it changed.
    async fn replace_secret(&self, secret: &SecretObject) -> PortResult<SecretObject>;
    /// Secrets in `namespace` matching a label selector such as `istio/multiCluster=true`.
    async fn list_secrets(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> PortResult<Vec<SecretObject>>;
    /// A bound ServiceAccount token from the TokenRequest API: the token and its expiry (Unix seconds).
    async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_seconds: i64,
    ) -> PortResult<(SecretBytes, i64)>;
    async fn get_object(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> PortResult<Option<KubeObject>>;
    /// Creates (no resourceVersion) or replaces conditionally (with one).
    async fn put_object(&self, kind: ObjectKind, object: &KubeObject) -> PortResult<()>;
    /// Deletes, conditional on the resourceVersion.
    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> PortResult<()>;
}

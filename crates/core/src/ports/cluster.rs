//! What the engine needs from one Kubernetes cluster: typed objects, conditional writes.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::PortResult;
use crate::secret::SecretBytes;

/// The other kinds of object meshtrust owns (the reader identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::ServiceAccount => "ServiceAccount",
            ObjectKind::ClusterRole => "ClusterRole",
            ObjectKind::ClusterRoleBinding => "ClusterRoleBinding",
        })
    }
}

/// One RBAC rule. Empty lists stand for fields Kubernetes omits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RbacRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

impl RbacRule {
    pub fn new(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> Self {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        RbacRule {
            api_groups: owned(api_groups),
            resources: owned(resources),
            verbs: owned(verbs),
            resource_names: vec![],
        }
    }
}

/// The subject of a binding: a ServiceAccount in a namespace (the only kind meshtrust binds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// What an object holds besides its metadata, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectBody {
    ServiceAccount,
    ClusterRole {
        rules: Vec<RbacRule>,
    },
    /// Binds a ClusterRole (by name) to ServiceAccounts.
    ClusterRoleBinding {
        cluster_role: String,
        subjects: Vec<ServiceAccountRef>,
    },
}

impl ObjectBody {
    pub fn kind(&self) -> ObjectKind {
        match self {
            ObjectBody::ServiceAccount => ObjectKind::ServiceAccount,
            ObjectBody::ClusterRole { .. } => ObjectKind::ClusterRole,
            ObjectBody::ClusterRoleBinding { .. } => ObjectKind::ClusterRoleBinding,
        }
    }
}

/// A Kubernetes object other than a Secret: its labels, resourceVersion and typed contents.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeObject {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub resource_version: Option<String>,
    pub body: ObjectBody,
}

/// A bound ServiceAccount token from the TokenRequest API.
#[derive(Debug, Clone)]
pub struct BoundToken {
    pub token: SecretBytes,
    /// Unix seconds.
    pub expires: i64,
}

/// An ownerReference on an object: who the garbage collector deletes it with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// A kind of custom object another controller reads (an `ExternalSecret`, a `Certificate` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
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
    /// Read only, and a replace drops them: meshtrust writes only Secrets no live controller owns
    /// (`handover`), and a reference to a gone owner would have the garbage collector delete the Secret.
    pub owner_references: Vec<OwnerRef>,
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
    /// A ConfigMap's `data`, if it exists (istiod's `istio-ca-root-cert`).
    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> PortResult<Option<BTreeMap<String, String>>>;
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
    /// As [`list_secrets`](Self::list_secrets), without the Secrets' data and type: what an agent needs to decide
    /// (labels, annotations, owners, resourceVersion), without holding a thousand peers' kubeconfigs per round.
    async fn list_secret_metadata(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> PortResult<Vec<SecretObject>> {
        let mut secrets = self.list_secrets(namespace, label_selector).await?;
        for secret in &mut secrets {
            secret.data.clear();
            secret.type_ = None;
        }
        Ok(secrets)
    }
    /// A bound ServiceAccount token from the TokenRequest API.
    async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_seconds: i64,
    ) -> PortResult<BoundToken>;
    async fn get_object(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> PortResult<Option<KubeObject>>;
    /// Creates (no resourceVersion) or replaces conditionally (with one); the kind comes from the body.
    async fn put_object(&self, object: &KubeObject) -> PortResult<()>;
    /// Every object of a custom kind in `namespace`, as the API server returns it (JSON); empty when the kind is
    /// not installed.
    async fn list_custom_objects(
        &self,
        kind: &CustomKind,
        namespace: &str,
    ) -> PortResult<Vec<serde_json::Value>>;
    /// Deletes, conditional on the resourceVersion.
    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> PortResult<()>;
}

//! What the engine needs from OpenBao, one typed method per thing: no API paths and no JSON above the `bao` crate.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::PortResult;
use crate::duration::Span;
use crate::facts::RoleFacts;
use crate::mesh::KeySpec;
use crate::secret::SecretBytes;

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

/// An auth method as `sys/auth` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthMountInfo {
    pub kind: String,
    pub description: String,
}

/// Where the Kubernetes auth method checks login JWTs: the API server and the CA that signs its certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesAuthConfig {
    pub kubernetes_host: String,
    pub kubernetes_ca_cert: String,
}

/// What KV v2 says about an entry without returning its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvMetadata {
    pub current_version: u64,
    /// The current version was soft-deleted or destroyed: a read of the data finds nothing, yet a
    /// check-and-set write must still name `current_version`.
    pub current_deleted: bool,
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
    /// Imports a root (its certificate and unencrypted private key, PEM, in `bundle`) into the PKI mount and
    /// names it `issuer_name`. Importing a root the mount holds already finds that issuer; a name in use by
    /// another issuer is a conflict.
    async fn import_root(
        &self,
        pki: &str,
        bundle: &SecretBytes,
        issuer_name: &str,
    ) -> PortResult<GenerateOutcome>;
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
    /// Mounts an auth method; `description` is how meshtrust later recognises what it made.
    async fn enable_auth(&self, path: &str, kind: &str, description: &str) -> PortResult<()>;
    /// Unmounts an auth method and everything in it (its roles, its tokens' logins).
    async fn disable_auth(&self, path: &str) -> PortResult<()>;
    /// The names of every ACL policy.
    async fn list_policies(&self) -> PortResult<Vec<String>>;
    async fn delete_policy(&self, name: &str) -> PortResult<()>;
    /// Every auth method mounted, by path (without the trailing `/`): one request for the whole mesh.
    async fn auth_mounts(&self) -> PortResult<BTreeMap<String, AuthMountInfo>>;
    /// The Kubernetes auth method's configuration at `auth/<mount>`; `None` when it has none.
    async fn kubernetes_auth_config(&self, mount: &str)
    -> PortResult<Option<KubernetesAuthConfig>>;
    /// Configures the Kubernetes auth method at `auth/<mount>`. OpenBao reviews each login JWT with itself,
    /// so no long-lived reviewer token is ever stored.
    async fn write_kubernetes_auth_config(
        &self,
        mount: &str,
        config: &KubernetesAuthConfig,
    ) -> PortResult<()>;
    /// A role of the Kubernetes auth method at `auth/<mount>`; `None` when absent.
    async fn kubernetes_auth_role(&self, mount: &str, role: &str) -> PortResult<Option<RoleFacts>>;
    /// The names of every role of the Kubernetes auth method at `auth/<mount>` (empty when it has none).
    async fn kubernetes_auth_roles(&self, mount: &str) -> PortResult<Vec<String>>;
    /// Deletes one role of the Kubernetes auth method at `auth/<mount>`; an absent role is not an error.
    async fn delete_kubernetes_auth_role(&self, mount: &str, role: &str) -> PortResult<()>;
    async fn write_kubernetes_auth_role(
        &self,
        mount: &str,
        role: &str,
        settings: &RoleFacts,
    ) -> PortResult<()>;
    async fn read_policy(&self, name: &str) -> PortResult<Option<String>>;
    async fn write_policy(&self, name: &str, text: &str) -> PortResult<()>;
    /// Deletes every version and the metadata of a KV v2 entry.
    async fn kv_delete(&self, mount: &str, path: &str) -> PortResult<()>;
    /// A KV v2 entry's metadata only (no secret data): a cheap way to learn whether it changed.
    async fn kv_metadata(&self, mount: &str, path: &str) -> PortResult<Option<KvMetadata>>;
    /// One version of a KV v2 entry; `None` when that version is absent, deleted, destroyed or pruned.
    async fn kv_get_version(
        &self,
        mount: &str,
        path: &str,
        version: u64,
    ) -> PortResult<Option<KvEntry>>;
    /// The keys directly under a KV v2 folder (a trailing `/` marks a sub-folder); empty when none.
    async fn kv_list(&self, mount: &str, folder: &str) -> PortResult<Vec<String>>;
    /// Every entry directly under a KV v2 folder with its metadata, in a few paginated requests whatever the
    /// number of entries (OpenBao's `LIST <mount>/detailed-metadata/<folder>`). `None` when the server does not
    /// offer it (Vault, an OpenBao before 2.2): the caller reads entry by entry instead.
    async fn kv_list_metadata(
        &self,
        mount: &str,
        folder: &str,
    ) -> PortResult<Option<BTreeMap<String, KvMetadata>>>;
}

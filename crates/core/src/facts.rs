//! What meshtrust observed, reduced to plain facts the planner can compare. The engine derives them from
//! OpenBao answers and Kubernetes objects; the planner never sees PEM or keys.

use std::collections::BTreeMap;

use crate::mesh::{KeySpec, SecretFormat};

/// A certificate, summarised. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertFacts {
    pub serial: String,
    /// SHA-256 of the DER, lowercase hex: what operators compare across clusters.
    pub fingerprint: String,
    pub subject_cn: String,
    pub not_before: i64,
    pub not_after: i64,
    pub key: Option<KeySpec>,
    pub is_ca: bool,
}

/// A root issuer in the PKI mount that meshtrust created (`meshtrust-root-<generation>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootIssuerFacts {
    pub generation: u32,
    pub issuer_id: String,
    pub cert: CertFacts,
    /// True when OpenBao holds the key internally (not exported, not importable back out); false for a root
    /// imported from the KV bundle `ca.importRoot.kvPath` still names (its key lived outside OpenBao).
    pub key_internal: bool,
}

impl RootIssuerFacts {
    pub fn issuer_name(&self) -> String {
        root_issuer_name(self.generation)
    }
}

pub use crate::names::root_issuer_name;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum MountFacts {
    Absent,
    Present { kind: String, max_lease_ttl: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenBaoFacts {
    pub pki_mount: MountFacts,
    /// meshtrust's root issuers, oldest generation first.
    pub roots: Vec<RootIssuerFacts>,
    /// Other issuers found in the mount (not meshtrust's): reported, never touched.
    pub foreign_issuers: usize,
    /// shared-root mode: the bundle kept in KV, if present.
    pub shared_root: Option<CertFacts>,
    /// `ca.importRoot`: the root to import (or imported), as found; `None` when the mesh file imports nothing
    /// or this observation could not look (an agent does not read the admin's KV bundle).
    pub import: Option<ImportFacts>,
    /// OpenBao's configuration as meshtrust manages it (namespace, mounts, auth, policies).
    pub config: BaoConfigFacts,

    /// What each cluster of the mesh file last published (its own KV entry). A cluster that has not published,
    /// or whose entry cannot be read, is absent.
    pub published: BTreeMap<String, PublishedFacts>,
    /// Clusters with a published entry that the mesh file no longer lists (observed by the admin only).
    pub departed: std::collections::BTreeSet<String>,
}

/// The root `ca.importRoot` names, as found in KV (`kvPath`) or in the PKI mount (`issuer`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ImportFacts {
    /// Nothing at that KV path, or no issuer by that reference.
    Missing,
    /// Found, but it cannot be the mesh's root: each problem names the field and the fix, never the content.
    Invalid { problems: Vec<String> },
    /// A usable root (a self-signed CA whose key is at hand): its certificate.
    Ready { cert: CertFacts },
}

/// What one cluster published for its peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedFacts {
    /// KV version of `<kv>/<kvPath>/<cluster>` this entry describes.
    pub version: u64,
    /// When the published reader token expires (Unix seconds).
    pub token_expires: i64,
    /// Hash of what the kubeconfig points at (server, CA): a change means republish.
    pub config_hash: String,
}

/// A meshtrust-owned cluster-scoped or namespaced object, as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ObjectState {
    Absent,
    /// Someone else's (Istio's chart made it): used, never changed.
    Unmanaged,
    Managed {
        up_to_date: bool,
    },
}

/// The reader identity peers use to read this cluster: ServiceAccount, ClusterRole, ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReaderFacts {
    pub service_account: ObjectState,
    pub cluster_role: ObjectState,
    pub binding: ObjectState,
}

impl Default for ReaderFacts {
    fn default() -> Self {
        ReaderFacts {
            service_account: ObjectState::Absent,
            cluster_role: ObjectState::Absent,
            binding: ObjectState::Absent,
        }
    }
}

/// An `istio-remote-secret-<peer>` found in a cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteSecretFacts {
    pub managed: bool,
    /// The KV version it was synced from (meshtrust's annotation).
    pub kv_version: Option<u64>,
}

/// What OpenBao holds of meshtrust's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BaoConfigFacts {
    /// `None` when the mesh file sets no namespace.
    pub namespace_exists: Option<bool>,
    pub kv_mount: Option<MountFacts>,
    /// Per cluster name.
    pub auth: BTreeMap<String, AuthFacts>,
    /// Policy name → its text, `None` if absent.
    pub policies: BTreeMap<String, Option<String>>,
    /// Auth mounts the mesh file no longer uses that hold a mount or role meshtrust made for a cluster that
    /// left: mount → what is in it.
    pub departed_auth: BTreeMap<String, crate::auth_ownership::DepartedAuth>,
    /// Agent policies of clusters no longer in the mesh file.
    pub departed_policies: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuthFacts {
    /// The auth method type at the mount path, if anything is mounted there.
    pub kind: Option<String>,
    /// The mount's description (empty: none, as an earlier meshtrust left it).
    pub description: String,
    pub kubernetes_host: Option<String>,
    pub kubernetes_ca_cert: Option<String>,
    pub role: Option<RoleFacts>,
    /// The mount's roles besides meshtrust's agent role (other tools' logins); `None` when they could not be
    /// listed.
    pub other_roles: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleFacts {
    pub service_account_names: Vec<String>,
    pub service_account_namespaces: Vec<String>,
    pub policies: Vec<String>,
    pub token_ttl: u64,
}

/// How a cluster's API server is reached and trusted, from its kubeconfig.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterApiFacts {
    pub server: String,
    pub ca_pem: Option<String>,
}

impl OpenBaoFacts {
    pub fn root_by_fingerprint(&self, fingerprint: &str) -> Option<&RootIssuerFacts> {
        self.roots
            .iter()
            .find(|r| r.cert.fingerprint == fingerprint)
    }

    pub fn newest_root(&self) -> Option<&RootIssuerFacts> {
        self.roots.iter().max_by_key(|r| r.generation)
    }
}

/// What `istio-system/cacerts` holds in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
// One value per cluster and observation: the unboxed state is simpler to match and costs nothing that matters.
#[allow(clippy::large_enum_variant)]
pub enum CacertsFacts {
    Absent,
    /// Present but without meshtrust's managed-by label: never touched unless adopted.
    Unmanaged,
    Managed(CacertsState),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacertsState {
    pub format: SecretFormat,
    /// The signing CA istiod uses (`ca-cert.pem`), if it parsed.
    pub ca_cert: Option<CertFacts>,
    /// Fingerprint of the certificate that signed `ca_cert` (taken from the chain and verified).
    pub issuer_fingerprint: Option<String>,
    /// Fingerprints of the roots in `root-cert.pem`, in file order.
    pub trusted_roots: Vec<String>,
    /// The notBefore of each of those roots, in the same order: when a root OpenBao does not hold was made.
    pub trusted_not_before: Vec<i64>,
    /// Everything wrong with the bundle as istiod would see it (missing key, key/cert mismatch, broken chain ...).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterFacts {
    pub namespace_exists: bool,
    pub cacerts: CacertsFacts,
    pub api: ClusterApiFacts,
    pub reader: ReaderFacts,
    /// Remote secrets in the Istio namespace, by the peer cluster they point at.
    pub remote_secrets: BTreeMap<String, RemoteSecretFacts>,
    /// Hash of the server and CA this cluster's kubeconfig should carry (computed by the engine).
    pub desired_config_hash: String,
    /// Secrets in the Istio namespace that another controller (ESO, VSO, cert-manager) writes or wrote, by name.
    pub claims: BTreeMap<String, crate::handover::ForeignClaim>,
    /// istioctl's never-expiring reader token Secret is in the Istio namespace.
    pub legacy_reader_token: bool,
    /// Fingerprints of the roots in a `cacerts` meshtrust does not manage (`root-cert.pem` or `ca.crt`): whether
    /// taking it over changes the roots istiod booted with.
    pub unmanaged_roots: Vec<String>,
}

/// Everything observed in one run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Observed {
    pub openbao: OpenBaoFacts,
    pub clusters: BTreeMap<String, ClusterFacts>,
    /// Every cluster's published trust facts and the roots connected istiods serve (root rotation).
    pub trust: crate::trust_facts::TrustObservation,
    /// The clock reading taken when observing, so that planning itself reads no clock.
    pub now: i64,
}

//! The mesh file (`mesh.yaml`, schema `meshtrust.dev/v1`): what the mesh should look like. Every field has a
//! default; `docs/mesh-file.md` is the reference. Parsing yields a validated [`Mesh`] or every problem at once,
//! each naming the field path and the fix.
//!
//! `schema` is the file as written; each section has its own validator (`header`, `openbao`, `ca`, `agent`,
//! `remote_secrets`, `clusters`) that fills in defaults and records problems in a shared `Checker`.

mod agent;
mod ca;
mod check;
mod clusters;
mod header;
mod openbao;
mod remote_secrets;
mod schema;
mod url;

pub use check::MAX_SPAN;

use std::fmt;
use std::path::PathBuf;

use crate::duration::Span;
use check::Checker;
use schema::RawMesh;

pub const API_VERSION: &str = "meshtrust.dev/v1";

/// The largest mesh file meshtrust reads (1 MiB): a real one is a few KiB, and reading stops here so that
/// `--mesh /dev/zero` or a runaway generator cannot exhaust memory.
pub const MAX_MESH_FILE_BYTES: usize = 1 << 20;

/// How the mesh's trust anchor is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaMode {
    /// An internal root in OpenBao's PKI engine; its key never leaves OpenBao. Clusters get intermediates.
    BaoPki,
    /// seed 001: a locally generated root bundle kept in KV and copied into every cluster as its CA.
    SharedRoot,
}

/// Which key names the `cacerts` Secret uses. Both are read by istiod (the `tls.*` form since 1.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretFormat {
    /// `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`: Istio's documented plug-in form.
    Istio,
    /// `tls.crt`, `tls.key`, `ca.crt`: the cert-manager form.
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Rsa,
    Ec,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "rsa",
            KeyType::Ec => "ec",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KeySpec {
    pub key_type: KeyType,
    pub bits: u32,
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_type {
            KeyType::Rsa => write!(f, "RSA-{}", self.bits),
            KeyType::Ec => write!(f, "ECDSA P-{}", self.bits),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenBaoSettings {
    /// `None`: take `BAO_ADDR`/`VAULT_ADDR` from the environment.
    pub address: Option<String>,
    /// PEM of the CA that signed OpenBao's TLS certificate, when it is a private one; `BAO_CACERT` (a file)
    /// wins over it. In the mesh file, every agent gets it with the mesh (the chart's `--set-file mesh=`).
    pub ca_cert: Option<String>,
    /// OpenBao namespace (`X-Vault-Namespace`), such as seed 000's `production`.
    pub namespace: Option<String>,
    pub kv_mount: String,
    pub pki_mount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootSettings {
    pub common_name: String,
    pub organization: String,
    pub key: KeySpec,
    pub ttl: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntermediateSettings {
    pub key: KeySpec,
    pub ttl: Span,
    pub renew_before: Span,
    pub organization: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaSettings {
    pub mode: CaMode,
    pub secret_format: SecretFormat,
    pub root: RootSettings,
    pub intermediate: IntermediateSettings,
    /// KV path (under the KV mount) of the shared-root bundle; seed 001's `istio/ca`.
    pub shared_root_kv_path: String,
    /// How long every cluster must sign with a new root before any cluster drops the old one, so that
    /// workload certificates signed under the old root have expired (`ca.rootRotation.phaseDwell`).
    pub phase_dwell: crate::duration::Span,
    /// The root a running mesh already trusts, taken as meshtrust's first root generation (`ca.importRoot`).
    pub import_root: Option<ImportRoot>,
}

/// Where the root a mesh already trusts comes from (`ca.importRoot`), so that meshtrust signs under it instead
/// of making a new root every proxy would first have to learn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ImportRoot {
    /// A bundle (`root-cert.pem`, `key.pem`) at this path in `openbao.kvMount` (seed 001's `istio/ca`), imported
    /// into the PKI engine as `meshtrust-root-1`.
    KvPath(String),
    /// An issuer already in `openbao.pkiMount` (its name or ID), used as generation 1 as it is: nothing is
    /// copied or renamed.
    Issuer(String),
}

impl CaSettings {
    /// The issuer reference OpenBao signs with for root `generation`: the imported issuer's own reference for
    /// generation 1 under `ca.importRoot.issuer`, else `meshtrust-root-<generation>`.
    pub fn issuer_ref(&self, generation: u32) -> String {
        match &self.import_root {
            Some(ImportRoot::Issuer(reference)) if generation == 1 => reference.clone(),
            _ => crate::names::root_issuer_name(generation),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterSettings {
    pub name: String,
    /// `None`: the default kubeconfig (`$KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub network: String,
    /// The API address as peers reach it; `None`: the kubeconfig's server.
    pub api_server: Option<String>,
    /// OpenBao auth mount path for this cluster's Kubernetes auth (`kubernetes_cluster_a`).
    pub auth_mount: String,
    pub istio_namespace: String,
}

impl ClusterSettings {
    /// The common name pinned for this cluster's intermediate; OpenBao policy allows exactly this value.
    pub fn intermediate_common_name(&self, mesh_id: &str) -> String {
        format!("{} intermediate CA ({mesh_id})", self.name)
    }
}

/// The meshtrust agent's identity in every cluster, as OpenBao's Kubernetes auth role binds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentSettings {
    pub service_account: String,
    pub namespace: String,
    /// Lifetime of the OpenBao token an agent gets at login.
    pub token_ttl: Span,
}

/// Where remote secrets are published in KV (paths under the KV mount).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteSecretSettings {
    /// `<kv>/<kvPath>/<cluster>`: seed 000's `kv/istio/remote-secrets/cluster-a`.
    pub kv_path: String,
    /// One KV entry whose version moves on every publish, so a poll costs one request.
    pub index_path: String,
    /// Lifetime of the reader's bound token (TokenRequest) in each published kubeconfig.
    pub token_ttl: Span,
    /// Publish a fresh token when less than this is left.
    pub refresh_before: Span,
    /// Who installs the reader identity peers read this cluster with.
    pub reader_identity: ReaderIdentity,
}

/// Who installs `istio-reader-service-account` and Istio's reader ClusterRole and binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReaderIdentity {
    /// meshtrust's deploy files (`render agent`, the chart), with Istio's charts told not to (a new mesh).
    Meshtrust,
    /// Istio's own charts, as on a mesh that runs already (both seeds): meshtrust's deploy files leave it out
    /// and Istio's chart values keep it, so neither takes the other's objects (the engine only uses them).
    Istio,
}

/// A validated mesh file with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mesh {
    pub mesh_id: String,
    pub openbao: OpenBaoSettings,
    pub ca: CaSettings,
    pub agent: AgentSettings,
    pub remote_secrets: RemoteSecretSettings,
    pub clusters: Vec<ClusterSettings>,
    /// Relative kubeconfig paths are resolved against this directory (the mesh file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Mesh {
    pub fn cluster(&self, name: &str) -> Option<&ClusterSettings> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// One problem in a mesh file: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{file}: not a valid mesh file: {message}\n  (the schema is in docs/mesh-file.md)")]
    Syntax { file: String, message: String },
    #[error("{file}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl Mesh {
    /// Parses and validates a mesh file. `file` names it in errors; `base_dir` anchors relative kubeconfig paths.
    /// Every section is checked even after a problem, so the error lists all of them at once.
    pub fn from_yaml(text: &str, file: &str, base_dir: PathBuf) -> Result<Mesh, MeshError> {
        if text.len() > MAX_MESH_FILE_BYTES {
            return Err(MeshError::Syntax {
                file: file.to_string(),
                message: format!(
                    "larger than {} MiB; a mesh file is a few KiB, check that --mesh names the right file",
                    MAX_MESH_FILE_BYTES >> 20
                ),
            });
        }
        let raw: RawMesh = serde_saphyr::from_str(text).map_err(|e| MeshError::Syntax {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let mut c = Checker::default();
        let mesh_id = header::validate(
            raw.api_version.as_deref(),
            raw.kind.as_deref(),
            raw.mesh_id,
            &mut c,
        );
        let openbao = openbao::validate(raw.openbao, &mut c);
        let ca = ca::validate(raw.ca, &mesh_id, &mut c);
        let agent = agent::validate(raw.agent, &mut c);
        let remote_secrets = remote_secrets::validate(raw.remote_secrets, &mut c);
        let clusters = clusters::validate(raw.clusters, &base_dir, &mut c);
        if !c.problems.is_empty() {
            return Err(MeshError::Invalid {
                file: file.to_string(),
                problems: c.problems,
            });
        }
        Ok(Mesh {
            mesh_id,
            openbao,
            ca,
            agent,
            remote_secrets,
            clusters,
            base_dir,
        })
    }
}

#[cfg(test)]
mod tests;

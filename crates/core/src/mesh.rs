//! The mesh file (`mesh.yaml`, schema `meshtrust.dev/v1`): what the mesh should look like. Every field has a
//! default; `docs/mesh-file.md` is the reference. Parsing yields a validated [`Mesh`] or every problem at once,
//! each naming the field path and the fix.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::duration::Span;

pub const API_VERSION: &str = "meshtrust.dev/v1";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMesh {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(rename = "meshID")]
    mesh_id: Option<String>,
    #[serde(default)]
    openbao: RawOpenBao,
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    remote_secrets: RawRemoteSecrets,
    #[serde(default)]
    clusters: Vec<RawCluster>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAgent {
    service_account: Option<String>,
    namespace: Option<String>,
    token_ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRemoteSecrets {
    kv_path: Option<String>,
    index_path: Option<String>,
    token_ttl: Option<String>,
    refresh_before: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOpenBao {
    address: Option<String>,
    namespace: Option<String>,
    kv_mount: Option<String>,
    pki_mount: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCa {
    mode: Option<String>,
    secret_format: Option<String>,
    #[serde(default)]
    root: RawRoot,
    #[serde(default)]
    intermediate: RawIntermediate,
    shared_root_kv_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRoot {
    common_name: Option<String>,
    organization: Option<String>,
    key_type: Option<String>,
    key_bits: Option<u32>,
    ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIntermediate {
    key_type: Option<String>,
    key_bits: Option<u32>,
    ttl: Option<String>,
    renew_before: Option<String>,
    organization: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCluster {
    name: Option<String>,
    kubeconfig: Option<String>,
    context: Option<String>,
    network: Option<String>,
    api_server: Option<String>,
    auth_mount: Option<String>,
    istio_namespace: Option<String>,
}

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

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn span(&mut self, path: &str, value: Option<&str>, default: &str) -> Span {
        match Span::parse(value.unwrap_or(default)) {
            Ok(span) if span.0 > 0 => span,
            Ok(_) => {
                self.problem(path, "must be longer than zero");
                Span(1)
            }
            Err(e) => {
                self.problem(path, e);
                Span(1)
            }
        }
    }

    fn key(
        &mut self,
        path: &str,
        key_type: Option<&str>,
        bits: Option<u32>,
        default: KeySpec,
    ) -> KeySpec {
        let key_type = match key_type {
            None => default.key_type,
            Some("rsa") => KeyType::Rsa,
            Some("ec") => KeyType::Ec,
            Some(other) => {
                self.problem(
                    format!("{path}.keyType"),
                    format!("{other:?} is not supported; use \"rsa\" or \"ec\""),
                );
                default.key_type
            }
        };
        let default_bits = if key_type == default.key_type {
            default.bits
        } else if key_type == KeyType::Rsa {
            4096
        } else {
            256
        };
        let bits = bits.unwrap_or(default_bits);
        let ok = match key_type {
            KeyType::Rsa => [2048, 3072, 4096].contains(&bits),
            KeyType::Ec => [256, 384].contains(&bits),
        };
        if !ok {
            let allowed = if key_type == KeyType::Rsa {
                "2048, 3072 or 4096"
            } else {
                "256 or 384 (istiod accepts P-256 and P-384)"
            };
            self.problem(
                format!("{path}.keyBits"),
                format!("{bits} is not valid for {key_type}; use {allowed}"),
            );
        }
        KeySpec { key_type, bits }
    }
}

/// A DNS-1123 label, as Kubernetes object names and Istio cluster IDs need.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_mount_path(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.ends_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
}

impl Mesh {
    /// Parses and validates a mesh file. `file` names it in errors; `base_dir` anchors relative kubeconfig paths.
    pub fn from_yaml(text: &str, file: &str, base_dir: PathBuf) -> Result<Mesh, MeshError> {
        let raw: RawMesh = serde_saphyr::from_str(text).map_err(|e| MeshError::Syntax {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let mut c = Checker {
            problems: Vec::new(),
        };

        match raw.api_version.as_deref() {
            Some(API_VERSION) => {}
            None => c.problem(
                "apiVersion",
                format!("missing; add `apiVersion: {API_VERSION}`"),
            ),
            Some(other) => c.problem(
                "apiVersion",
                format!("{other:?} is not supported; use {API_VERSION}"),
            ),
        }
        match raw.kind.as_deref() {
            Some("Mesh") => {}
            None => c.problem("kind", "missing; add `kind: Mesh`"),
            Some(other) => c.problem(
                "kind",
                format!("{other:?} is not a mesh file kind; use Mesh"),
            ),
        }
        let mesh_id = raw.mesh_id.unwrap_or_else(|| "mesh1".to_string());
        if !is_dns_label(&mesh_id) {
            c.problem(
                "meshID",
                format!("{mesh_id:?} must be a DNS label (lowercase letters, digits, '-')"),
            );
        }

        let ob = raw.openbao;
        if let Some(addr) = &ob.address
            && !(addr.starts_with("http://") || addr.starts_with("https://"))
        {
            c.problem(
                "openbao.address",
                format!("{addr:?} must start with https:// (or http:// for a local dev server)"),
            );
        }
        let kv_mount = ob.kv_mount.unwrap_or_else(|| "secret".into());
        let pki_mount = ob.pki_mount.unwrap_or_else(|| "pki".into());
        for (path, value) in [
            ("openbao.kvMount", &kv_mount),
            ("openbao.pkiMount", &pki_mount),
        ] {
            if !is_mount_path(value) {
                c.problem(path, format!("{value:?} is not a mount path; use letters, digits, '-', '_' and no leading or trailing '/'"));
            }
        }
        if let Some(ns) = &ob.namespace
            && !is_mount_path(ns)
        {
            c.problem(
                "openbao.namespace",
                format!("{ns:?} is not a namespace path such as \"production\" or \"team/prod\""),
            );
        }

        let ca = raw.ca;
        let mode = match ca.mode.as_deref() {
            None | Some("bao-pki") => CaMode::BaoPki,
            Some("shared-root") => CaMode::SharedRoot,
            Some(other) => {
                c.problem(
                    "ca.mode",
                    format!(
                        "{other:?} is not a mode; use \"bao-pki\" (default) or \"shared-root\""
                    ),
                );
                CaMode::BaoPki
            }
        };
        let secret_format = match ca.secret_format.as_deref() {
            None | Some("istio") => SecretFormat::Istio,
            Some("tls") => SecretFormat::Tls,
            Some(other) => {
                c.problem(
                    "ca.secretFormat",
                    format!("{other:?} is not a format; use \"istio\" (default) or \"tls\""),
                );
                SecretFormat::Istio
            }
        };
        let root = RootSettings {
            common_name: ca
                .root
                .common_name
                .unwrap_or_else(|| format!("meshtrust root CA ({mesh_id})")),
            organization: ca.root.organization.unwrap_or_else(|| "Istio".into()),
            key: c.key(
                "ca.root",
                ca.root.key_type.as_deref(),
                ca.root.key_bits,
                KeySpec {
                    key_type: KeyType::Rsa,
                    bits: 4096,
                },
            ),
            ttl: c.span("ca.root.ttl", ca.root.ttl.as_deref(), "87600h"),
        };
        let intermediate = IntermediateSettings {
            key: c.key(
                "ca.intermediate",
                ca.intermediate.key_type.as_deref(),
                ca.intermediate.key_bits,
                KeySpec {
                    key_type: KeyType::Ec,
                    bits: 256,
                },
            ),
            ttl: c.span(
                "ca.intermediate.ttl",
                ca.intermediate.ttl.as_deref(),
                "8760h",
            ),
            renew_before: c.span(
                "ca.intermediate.renewBefore",
                ca.intermediate.renew_before.as_deref(),
                "720h",
            ),
            organization: ca
                .intermediate
                .organization
                .unwrap_or_else(|| "Istio".into()),
        };
        if intermediate.renew_before >= intermediate.ttl {
            c.problem(
                "ca.intermediate.renewBefore",
                format!("{} is not shorter than ttl {}; it would renew on every run. Make it a fraction of the ttl (default 720h of 8760h)", intermediate.renew_before, intermediate.ttl),
            );
        }
        if intermediate.ttl >= root.ttl {
            c.problem(
                "ca.intermediate.ttl",
                format!(
                    "{} must be shorter than the root's ttl {}",
                    intermediate.ttl, root.ttl
                ),
            );
        }
        let shared_root_kv_path = ca.shared_root_kv_path.unwrap_or_else(|| "istio/ca".into());
        if !is_mount_path(&shared_root_kv_path) {
            c.problem(
                "ca.sharedRootKvPath",
                format!("{shared_root_kv_path:?} is not a KV path such as istio/ca"),
            );
        }

        let agent = AgentSettings {
            service_account: raw
                .agent
                .service_account
                .unwrap_or_else(|| "meshtrust-agent".into()),
            namespace: raw.agent.namespace.unwrap_or_else(|| "istio-system".into()),
            token_ttl: c.span("agent.tokenTtl", raw.agent.token_ttl.as_deref(), "1h"),
        };
        for (path, value) in [
            ("agent.serviceAccount", &agent.service_account),
            ("agent.namespace", &agent.namespace),
        ] {
            if !is_dns_label(value) {
                c.problem(path, format!("{value:?} must be a DNS label"));
            }
        }
        let remote_secrets = RemoteSecretSettings {
            kv_path: raw
                .remote_secrets
                .kv_path
                .unwrap_or_else(|| "istio/remote-secrets".into()),
            index_path: raw
                .remote_secrets
                .index_path
                .unwrap_or_else(|| "istio/meshtrust-index".into()),
            token_ttl: c.span(
                "remoteSecrets.tokenTtl",
                raw.remote_secrets.token_ttl.as_deref(),
                "24h",
            ),
            refresh_before: c.span(
                "remoteSecrets.refreshBefore",
                raw.remote_secrets.refresh_before.as_deref(),
                "8h",
            ),
        };
        if remote_secrets.refresh_before >= remote_secrets.token_ttl {
            c.problem(
                "remoteSecrets.refreshBefore",
                format!(
                    "{} is not shorter than tokenTtl {}; every run would publish a new token",
                    remote_secrets.refresh_before, remote_secrets.token_ttl
                ),
            );
        }
        if remote_secrets.token_ttl < Span(600) {
            c.problem(
                "remoteSecrets.tokenTtl",
                "must be at least 10m (Kubernetes' minimum for TokenRequest)",
            );
        }
        for (path, value) in [
            ("remoteSecrets.kvPath", &remote_secrets.kv_path),
            ("remoteSecrets.indexPath", &remote_secrets.index_path),
        ] {
            if !is_mount_path(value) {
                c.problem(
                    path,
                    format!("{value:?} is not a KV path such as istio/remote-secrets"),
                );
            }
        }
        if remote_secrets
            .index_path
            .starts_with(&format!("{}/", remote_secrets.kv_path))
        {
            c.problem(
                "remoteSecrets.indexPath",
                "must not lie under remoteSecrets.kvPath, where each cluster may read every entry",
            );
        }

        if raw.clusters.is_empty() {
            c.problem(
                "clusters",
                "no clusters; list at least one, each with a name and a kubeconfig",
            );
        }
        let mut names = BTreeSet::new();
        let mut clusters = Vec::new();
        for (i, rc) in raw.clusters.into_iter().enumerate() {
            let at = |field: &str| format!("clusters[{i}].{field}");
            let name = rc.name.unwrap_or_default();
            if name.is_empty() {
                c.problem(
                    at("name"),
                    "missing; every cluster needs a name (it becomes Istio's cluster ID)",
                );
            } else if !is_dns_label(&name) {
                c.problem(at("name"), format!("{name:?} must be a DNS label (lowercase letters, digits, '-'), as Istio's clusterName"));
            } else if !names.insert(name.clone()) {
                c.problem(
                    at("name"),
                    format!("{name:?} appears twice; cluster names must be unique"),
                );
            }
            if let Some(api) = &rc.api_server
                && !api.starts_with("https://")
            {
                c.problem(
                    at("apiServer"),
                    format!("{api:?} must be an https:// URL that peers can reach"),
                );
            }
            let auth_mount = rc
                .auth_mount
                .unwrap_or_else(|| format!("kubernetes_{}", name.replace('-', "_")));
            if !is_mount_path(&auth_mount) {
                c.problem(
                    at("authMount"),
                    format!("{auth_mount:?} is not a mount path"),
                );
            }
            let istio_namespace = rc.istio_namespace.unwrap_or_else(|| "istio-system".into());
            if !is_dns_label(&istio_namespace) {
                c.problem(
                    at("istioNamespace"),
                    format!("{istio_namespace:?} must be a DNS label"),
                );
            }
            clusters.push(ClusterSettings {
                network: rc.network.unwrap_or_else(|| format!("network-{name}")),
                kubeconfig: rc.kubeconfig.map(|k| base_dir.join(k)),
                context: rc.context,
                api_server: rc.api_server,
                auth_mount,
                istio_namespace,
                name,
            });
        }

        if !c.problems.is_empty() {
            return Err(MeshError::Invalid {
                file: file.to_string(),
                problems: c.problems,
            });
        }
        Ok(Mesh {
            mesh_id,
            openbao: OpenBaoSettings {
                address: ob.address,
                namespace: ob.namespace,
                kv_mount,
                pki_mount,
            },
            ca: CaSettings {
                mode,
                secret_format,
                root,
                intermediate,
                shared_root_kv_path,
            },
            agent,
            remote_secrets,
            clusters,
            base_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mesh, MeshError> {
        Mesh::from_yaml(text, "mesh.yaml", PathBuf::from("/m"))
    }

    const MINIMAL: &str = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nclusters:\n  - name: cluster-a\n    kubeconfig: kc-a\n";

    #[test]
    fn minimal_file_gets_every_default() {
        let mesh = parse(MINIMAL).expect("valid");
        assert_eq!(mesh.mesh_id, "mesh1");
        assert_eq!(mesh.openbao.kv_mount, "secret");
        assert_eq!(mesh.openbao.pki_mount, "pki");
        assert_eq!(mesh.ca.mode, CaMode::BaoPki);
        assert_eq!(mesh.ca.secret_format, SecretFormat::Istio);
        assert_eq!(
            mesh.ca.root.key,
            KeySpec {
                key_type: KeyType::Rsa,
                bits: 4096
            }
        );
        assert_eq!(mesh.ca.root.ttl, Span::hours(87600));
        assert_eq!(
            mesh.ca.intermediate.key,
            KeySpec {
                key_type: KeyType::Ec,
                bits: 256
            }
        );
        assert_eq!(mesh.ca.intermediate.renew_before, Span::hours(720));
        let a = &mesh.clusters[0];
        assert_eq!(a.auth_mount, "kubernetes_cluster_a");
        assert_eq!(
            a.kubeconfig.as_deref(),
            Some(std::path::Path::new("/m/kc-a"))
        );
        assert_eq!(a.istio_namespace, "istio-system");
        assert_eq!(a.network, "network-cluster-a");
    }

    #[test]
    fn every_problem_names_its_field_and_fix() {
        let text = "apiVersion: v0\nkind: Mesh\nca:\n  mode: magic\n  intermediate:\n    keyType: ec\n    keyBits: 521\n    ttl: 10\n    renewBefore: 9000h\nclusters:\n  - name: Cluster_A\n    apiServer: http://x\n  - name: b\n  - name: b\n";
        let Err(MeshError::Invalid { problems, .. }) = parse(text) else {
            panic!("must be invalid")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "apiVersion",
            "ca.mode",
            "ca.intermediate.keyBits",
            "ca.intermediate.ttl",
            "clusters[0].name",
            "clusters[0].apiServer",
            "clusters[2].name",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        assert!(problems.iter().all(|p| !p.message.is_empty()));
    }

    #[test]
    fn unknown_fields_and_bad_yaml_are_syntax_errors() {
        let err = parse("apiVersion: meshtrust.dev/v1\nkind: Mesh\nclustrs: []\n").unwrap_err();
        assert!(err.to_string().contains("clustrs"), "{err}");
        let err = parse("clusters: [\n").unwrap_err();
        assert!(matches!(err, MeshError::Syntax { .. }));
    }

    #[test]
    fn renew_before_must_be_shorter_than_ttl() {
        let text = format!("{MINIMAL}ca:\n  intermediate:\n    ttl: 24h\n    renewBefore: 48h\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("ca.intermediate.renewBefore"), "{err}");
    }

    #[test]
    fn no_clusters_is_a_problem() {
        let err = parse("apiVersion: meshtrust.dev/v1\nkind: Mesh\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusters: no clusters"), "{err}");
    }
}

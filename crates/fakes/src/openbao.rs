//! An in-memory OpenBao: secret and auth mounts, namespaces, Kubernetes auth config and roles, ACL policies,
//! a PKI mount whose issuers are unique by name, and KV v2 with versions, check-and-set and soft deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use meshtrust_core::duration::Span;
use meshtrust_core::facts::RoleFacts;
use meshtrust_core::ports::{
    AuthMountInfo, ErrorKind, GenerateOutcome, IssuerInfo, KeyInfo, KubernetesAuthConfig, KvEntry,
    KvMetadata, MountInfo, OpenBao, PortError, PortResult, RootRequest, SignRequest,
    SignedCertificate, System,
};
use meshtrust_core::secret::SecretBytes;

use crate::faults::FakeCore;
use crate::signing::{Root, generate_root, sign_intermediate};

struct Issuer {
    id: String,
    name: String,
    root: Root,
}

/// One KV v2 entry: every version's data (`None` once soft-deleted), newest last.
#[derive(Default, Clone)]
pub struct KvRecord {
    pub versions: Vec<Option<BTreeMap<String, SecretBytes>>>,
}

/// Everything the fake OpenBao holds. Tests reach it through [`FakeOpenBao::with_state`].
#[derive(Default)]
pub struct BaoState {
    pub namespaces: BTreeSet<String>,
    pub mounts: BTreeMap<String, MountInfo>,
    pub auth_mounts: BTreeMap<String, String>,
    pub auth_descriptions: BTreeMap<String, String>,
    pub auth_configs: BTreeMap<String, KubernetesAuthConfig>,
    pub roles: BTreeMap<(String, String), RoleFacts>,
    pub policies: BTreeMap<String, String>,
    issuers: BTreeMap<String, Vec<Issuer>>,
    pub kv: BTreeMap<(String, String), KvRecord>,
    /// Answer `kv_list_metadata` as a server without `detailed-metadata` does (Vault): not offered.
    pub without_detailed_metadata: bool,
    serial: u64,
}

impl BaoState {
    /// Writes a new version as another client would, bypassing check-and-set: how a test makes a race lost.
    pub fn kv_write_behind(
        &mut self,
        mount: &str,
        path: &str,
        data: BTreeMap<String, SecretBytes>,
    ) {
        self.kv
            .entry((mount.to_string(), path.to_string()))
            .or_default()
            .versions
            .push(Some(data));
    }

    /// Soft-deletes the current version, as `bao kv delete` does.
    pub fn kv_soft_delete(&mut self, mount: &str, path: &str) {
        if let Some(record) = self.kv.get_mut(&(mount.to_string(), path.to_string()))
            && let Some(last) = record.versions.last_mut()
        {
            *last = None;
        }
    }

    /// Root issuer names in a PKI mount, oldest first.
    /// The certificate (PEM) of the issuer named `name`.
    pub fn issuer_pem(&self, pki: &str, name: &str) -> Option<String> {
        self.issuers
            .get(pki)?
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.root.cert_pem.clone())
    }

    pub fn issuer_names(&self, pki: &str) -> Vec<String> {
        self.issuers
            .get(pki)
            .map(|list| list.iter().map(|i| i.name.clone()).collect())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct FakeOpenBao {
    core: Arc<FakeCore<BaoState>>,
}

/// How many versions of a KV entry a read by version can still find (OpenBao's default `max_versions`).
const KV_MAX_VERSIONS: u64 = 10;

fn err(kind: ErrorKind, operation: &str, message: impl Into<String>) -> PortError {
    PortError::new(System::OpenBao, kind, operation, message)
}

impl FakeOpenBao {
    /// An empty OpenBao whose clock (for certificate validity) reads `now`.
    pub fn new(now: i64) -> Self {
        FakeOpenBao {
            core: FakeCore::new(System::OpenBao, now),
        }
    }
}

impl std::ops::Deref for FakeOpenBao {
    type Target = FakeCore<BaoState>;

    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

fn current(record: &KvRecord) -> Option<&BTreeMap<String, SecretBytes>> {
    record.versions.last()?.as_ref()
}

#[async_trait]
impl OpenBao for FakeOpenBao {
    async fn mount(&self, path: &str) -> PortResult<Option<MountInfo>> {
        self.call(format!("mount {path}"), |s, _| {
            Ok(s.mounts.get(path).cloned())
        })
    }

    async fn enable_mount(
        &self,
        path: &str,
        kind: &str,
        max_lease_ttl: Option<Span>,
    ) -> PortResult<()> {
        self.call(format!("enable_mount {path} {kind}"), |s, op| {
            if s.mounts.contains_key(path) {
                return Err(err(ErrorKind::Invalid, op, "path is already in use"));
            }
            let max_lease_ttl = max_lease_ttl.map(Span::seconds).unwrap_or(768 * 3600);
            s.mounts.insert(
                path.into(),
                MountInfo {
                    kind: kind.into(),
                    max_lease_ttl,
                },
            );
            Ok(())
        })
    }

    async fn tune_mount(&self, path: &str, max_lease_ttl: Span) -> PortResult<()> {
        self.call(format!("tune_mount {path} {max_lease_ttl}"), |s, op| {
            let mount = s
                .mounts
                .get_mut(path)
                .ok_or_else(|| err(ErrorKind::Invalid, op, "no mount"))?;
            mount.max_lease_ttl = max_lease_ttl.seconds();
            Ok(())
        })
    }

    async fn list_issuers(&self, pki: &str) -> PortResult<Vec<IssuerInfo>> {
        self.call(format!("list_issuers {pki}"), |s, _| {
            Ok(s.issuers
                .get(pki)
                .map(|list| {
                    list.iter()
                        .map(|i| IssuerInfo {
                            issuer_id: i.id.clone(),
                            issuer_name: i.name.clone(),
                            key_id: format!("key-{}", i.id),
                            certificate_pem: i.root.cert_pem.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    async fn key_info(&self, pki: &str, key_id: &str) -> PortResult<KeyInfo> {
        self.call(format!("key_info {pki} {key_id}"), |_, _| {
            Ok(KeyInfo {
                key_type: "ec".into(),
                internal: true,
            })
        })
    }

    async fn generate_root(&self, pki: &str, request: &RootRequest) -> PortResult<GenerateOutcome> {
        let now = self.now();
        self.call(
            format!("generate_root {pki} {}", request.issuer_name),
            |s, op| {
                if s.mounts.get(pki).is_none_or(|m| m.kind != "pki") {
                    return Err(err(ErrorKind::Invalid, op, "no PKI mount"));
                }
                if s.issuer_names(pki).contains(&request.issuer_name) {
                    return Ok(GenerateOutcome::AlreadyExists);
                }
                s.serial += 1;
                let root = generate_root(request, now, s.serial)
                    .map_err(|e| err(ErrorKind::Invalid, op, e))?;
                let id = format!("issuer-{}", s.serial);
                s.issuers.entry(pki.into()).or_default().push(Issuer {
                    id,
                    name: request.issuer_name.clone(),
                    root,
                });
                Ok(GenerateOutcome::Created)
            },
        )
    }

    async fn import_root(
        &self,
        pki: &str,
        bundle: &SecretBytes,
        issuer_name: &str,
    ) -> PortResult<GenerateOutcome> {
        self.call(format!("import_root {pki} {issuer_name}"), |s, op| {
            if s.mounts.get(pki).is_none_or(|m| m.kind != "pki") {
                return Err(err(ErrorKind::Invalid, op, "no PKI mount"));
            }
            let root = crate::signing::split_bundle(bundle.expose_str().unwrap_or_default())
                .ok_or_else(|| {
                    err(
                        ErrorKind::Invalid,
                        op,
                        "no certificate and key in the bundle",
                    )
                })?;
            let list = s.issuers.entry(pki.into()).or_default();
            if let Some(found) = list.iter().position(|i| i.root.cert_pem == root.cert_pem) {
                if list[found].name == issuer_name {
                    return Ok(GenerateOutcome::AlreadyExists);
                }
                if list.iter().any(|i| i.name == issuer_name) {
                    return Err(err(ErrorKind::Conflict, op, "issuer name already in use"));
                }
                list[found].name = issuer_name.to_string();
                return Ok(GenerateOutcome::Created);
            }
            if list.iter().any(|i| i.name == issuer_name) {
                return Err(err(ErrorKind::Conflict, op, "issuer name already in use"));
            }
            s.serial += 1;
            let id = format!("issuer-{}", s.serial);
            s.issuers.entry(pki.into()).or_default().push(Issuer {
                id,
                name: issuer_name.to_string(),
                root,
            });
            Ok(GenerateOutcome::Created)
        })
    }

    async fn sign_intermediate(
        &self,
        pki: &str,
        issuer: &str,
        request: &SignRequest,
    ) -> PortResult<SignedCertificate> {
        let now = self.now();
        let call = format!(
            "sign_intermediate {pki} {issuer} cn={}",
            request.common_name
        );
        self.call(call, |s, op| {
            s.serial += 1;
            let serial = s.serial;
            let found = s
                .issuers
                .get(pki)
                .and_then(|list| list.iter().find(|i| i.name == issuer || i.id == issuer))
                .ok_or_else(|| err(ErrorKind::Invalid, op, format!("no issuer {issuer}")))?;
            let certificate_pem = sign_intermediate(&found.root, request, now, serial)
                .map_err(|e| err(ErrorKind::Invalid, op, e))?;
            Ok(SignedCertificate {
                certificate_pem,
                issuing_ca_pem: found.root.cert_pem.clone(),
                serial: format!("{serial:02x}"),
            })
        })
    }

    async fn kv_get(&self, mount: &str, path: &str) -> PortResult<Option<KvEntry>> {
        self.call(format!("kv_get {mount}/{path}"), |s, _| {
            Ok(s.kv.get(&(mount.into(), path.into())).and_then(|r| {
                current(r).map(|data| KvEntry {
                    data: data.clone(),
                    version: r.versions.len() as u64,
                })
            }))
        })
    }

    async fn kv_get_version(
        &self,
        mount: &str,
        path: &str,
        version: u64,
    ) -> PortResult<Option<KvEntry>> {
        self.call(
            format!("kv_get {mount}/{path}?version={version}"),
            |s, _| {
                let Some(record) = s.kv.get(&(mount.into(), path.into())) else {
                    return Ok(None);
                };
                let len = record.versions.len() as u64;
                // Like a KV v2 mount's default max_versions: older versions are pruned.
                if version == 0 || version > len || version + KV_MAX_VERSIONS <= len {
                    return Ok(None);
                }
                Ok(record.versions[(version - 1) as usize]
                    .clone()
                    .map(|data| KvEntry { data, version }))
            },
        )
    }

    async fn kv_list(&self, mount: &str, folder: &str) -> PortResult<Vec<String>> {
        self.call(format!("kv_list {mount}/{folder}"), |s, _| {
            let prefix = format!("{}/", folder.trim_end_matches('/'));
            let mut keys: Vec<String> =
                s.kv.keys()
                    .filter(|(m, _)| m == mount)
                    .filter_map(|(_, p)| p.strip_prefix(&prefix))
                    .map(|rest| match rest.split_once('/') {
                        Some((dir, _)) => format!("{dir}/"),
                        None => rest.to_string(),
                    })
                    .collect();
            keys.dedup();
            Ok(keys)
        })
    }

    async fn kv_list_metadata(
        &self,
        mount: &str,
        folder: &str,
    ) -> PortResult<Option<BTreeMap<String, KvMetadata>>> {
        self.call(format!("kv_list_metadata {mount}/{folder}"), |s, _| {
            if s.without_detailed_metadata {
                return Ok(None);
            }
            let prefix = format!("{}/", folder.trim_end_matches('/'));
            Ok(Some(
                s.kv.iter()
                    .filter(|((m, _), _)| m == mount)
                    .filter_map(|((_, p), r)| Some((p.strip_prefix(&prefix)?, r)))
                    .filter(|(rest, _)| !rest.contains('/'))
                    .map(|(rest, r)| {
                        let meta = KvMetadata {
                            current_version: r.versions.len() as u64,
                            current_deleted: current(r).is_none(),
                        };
                        (rest.to_string(), meta)
                    })
                    .collect(),
            ))
        })
    }

    async fn kv_put(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, SecretBytes>,
        cas: u64,
    ) -> PortResult<u64> {
        self.call(format!("kv_put {mount}/{path} cas={cas}"), |s, op| {
            let record = s.kv.entry((mount.into(), path.into())).or_default();
            let version = record.versions.len() as u64;
            if version != cas {
                return Err(err(
                    ErrorKind::Conflict,
                    op,
                    format!("check-and-set at version {cas} failed: the entry is at {version}"),
                ));
            }
            record.versions.push(Some(data.clone()));
            Ok(version + 1)
        })
    }

    async fn namespace_exists(&self, namespace: &str) -> PortResult<bool> {
        self.call(format!("namespace_exists {namespace}"), |s, _| {
            Ok(s.namespaces.contains(namespace))
        })
    }

    async fn create_namespace(&self, namespace: &str) -> PortResult<()> {
        self.call(format!("create_namespace {namespace}"), |s, op| {
            if !s.namespaces.insert(namespace.into()) {
                return Err(err(ErrorKind::Invalid, op, "namespace already exists"));
            }
            Ok(())
        })
    }

    async fn auth_mounts(&self) -> PortResult<BTreeMap<String, AuthMountInfo>> {
        self.call("auth_mounts".to_string(), |s, _| {
            Ok(s.auth_mounts
                .iter()
                .map(|(path, kind)| {
                    let description = s.auth_descriptions.get(path).cloned().unwrap_or_default();
                    (
                        path.clone(),
                        AuthMountInfo {
                            kind: kind.clone(),
                            description,
                        },
                    )
                })
                .collect())
        })
    }

    async fn disable_auth(&self, path: &str) -> PortResult<()> {
        self.call(format!("disable_auth {path}"), |s, _| {
            s.auth_mounts.remove(path);
            s.auth_descriptions.remove(path);
            s.auth_configs.remove(path);
            s.roles.retain(|(mount, _), _| mount != path);
            Ok(())
        })
    }

    async fn list_policies(&self) -> PortResult<Vec<String>> {
        self.call("list_policies".to_string(), |s, _| {
            Ok(s.policies.keys().cloned().collect())
        })
    }

    async fn delete_policy(&self, name: &str) -> PortResult<()> {
        self.call(format!("delete_policy {name}"), |s, _| {
            s.policies.remove(name);
            Ok(())
        })
    }

    async fn auth_mount(&self, path: &str) -> PortResult<Option<String>> {
        self.call(format!("auth_mount {path}"), |s, _| {
            Ok(s.auth_mounts.get(path).cloned())
        })
    }

    async fn enable_auth(&self, path: &str, kind: &str, description: &str) -> PortResult<()> {
        self.call(format!("enable_auth {path} {kind}"), |s, op| {
            if s.auth_mounts.contains_key(path) {
                return Err(err(ErrorKind::Invalid, op, "path is already in use"));
            }
            s.auth_mounts.insert(path.into(), kind.into());
            s.auth_descriptions.insert(path.into(), description.into());
            Ok(())
        })
    }

    async fn kubernetes_auth_config(
        &self,
        mount: &str,
    ) -> PortResult<Option<KubernetesAuthConfig>> {
        self.call(format!("kubernetes_auth_config {mount}"), |s, _| {
            Ok(s.auth_configs.get(mount).cloned())
        })
    }

    async fn write_kubernetes_auth_config(
        &self,
        mount: &str,
        config: &KubernetesAuthConfig,
    ) -> PortResult<()> {
        self.call(format!("write_kubernetes_auth_config {mount}"), |s, _| {
            s.auth_configs.insert(mount.into(), config.clone());
            Ok(())
        })
    }

    async fn kubernetes_auth_role(&self, mount: &str, role: &str) -> PortResult<Option<RoleFacts>> {
        self.call(format!("kubernetes_auth_role {mount} {role}"), |s, _| {
            Ok(s.roles.get(&(mount.into(), role.into())).cloned())
        })
    }

    async fn kubernetes_auth_roles(&self, mount: &str) -> PortResult<Vec<String>> {
        self.call(format!("kubernetes_auth_roles {mount}"), |s, _| {
            Ok(s.roles
                .keys()
                .filter(|(m, _)| m == mount)
                .map(|(_, role)| role.clone())
                .collect())
        })
    }

    async fn delete_kubernetes_auth_role(&self, mount: &str, role: &str) -> PortResult<()> {
        self.call(
            format!("delete_kubernetes_auth_role {mount} {role}"),
            |s, _| {
                s.roles.remove(&(mount.into(), role.into()));
                Ok(())
            },
        )
    }

    async fn write_kubernetes_auth_role(
        &self,
        mount: &str,
        role: &str,
        settings: &RoleFacts,
    ) -> PortResult<()> {
        self.call(
            format!("write_kubernetes_auth_role {mount} {role}"),
            |s, _| {
                s.roles
                    .insert((mount.into(), role.into()), settings.clone());
                Ok(())
            },
        )
    }

    async fn read_policy(&self, name: &str) -> PortResult<Option<String>> {
        self.call(format!("read_policy {name}"), |s, _| {
            Ok(s.policies.get(name).cloned())
        })
    }

    async fn write_policy(&self, name: &str, text: &str) -> PortResult<()> {
        self.call(format!("write_policy {name}"), |s, _| {
            s.policies.insert(name.into(), text.into());
            Ok(())
        })
    }

    async fn kv_delete(&self, mount: &str, path: &str) -> PortResult<()> {
        self.call(format!("kv_delete {mount}/{path}"), |s, _| {
            s.kv.remove(&(mount.into(), path.into()));
            Ok(())
        })
    }

    async fn kv_metadata(&self, mount: &str, path: &str) -> PortResult<Option<KvMetadata>> {
        self.call(format!("kv_metadata {mount}/{path}"), |s, _| {
            Ok(s.kv.get(&(mount.into(), path.into())).map(|r| KvMetadata {
                current_version: r.versions.len() as u64,
                current_deleted: current(r).is_none(),
            }))
        })
    }
}

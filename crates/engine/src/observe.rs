//! Reading the actual state: OpenBao's PKI mount and roots (or the shared root), and each cluster's `cacerts`.
//! Facts go to the planner; the material (PEMs, the Secrets as read) stays here for `apply`.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshtrust_core::bao_plan::AGENT_ROLE;
use meshtrust_core::bao_plan::desired_host;
use meshtrust_core::facts::{
    AuthFacts, BaoConfigFacts, CacertsFacts, ClusterApiFacts, ClusterFacts, MountFacts, Observed,
    OpenBaoFacts, RoleFacts, RootIssuerFacts,
};
use meshtrust_core::mesh::{CaMode, Mesh};
use meshtrust_core::policy::{ADMIN_POLICY, agent_policy_name};
use meshtrust_core::ports::{Cluster, KubeObject, KvEntry, OpenBao, SecretObject};
use meshtrust_core::secret::SecretBytes;

use crate::remote::{config_hash, observe_reader, observe_remote_secrets, read_index};
use meshtrust_pki::cacerts::inspect;
use meshtrust_pki::parse_certs;
use serde_json::Value;

use crate::{CACERTS, EngineError, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Facts for the planner plus the material apply needs.
#[derive(Debug, Clone)]
pub struct Observation {
    pub facts: Observed,
    /// Root certificates by generation.
    pub roots_pem: BTreeMap<u32, String>,
    /// Each cluster's `cacerts` as read (with its resourceVersion), if present.
    pub cacerts: BTreeMap<String, Option<SecretObject>>,
    /// shared-root mode: the KV entry as read.
    pub shared_root: Option<KvEntry>,
    /// Each cluster's reader ServiceAccount, ClusterRole and binding as read.
    pub readers: BTreeMap<String, [Option<KubeObject>; 3]>,
    /// Each cluster's remote secrets as read, by peer.
    pub remote_secrets: BTreeMap<String, BTreeMap<String, SecretObject>>,
    /// The change index's KV version when observed (0: no index yet).
    pub index_version: u64,
    /// Kubeconfigs published during this apply, by cluster, with their KV version.
    pub published_now: BTreeMap<String, (SecretBytes, u64)>,
}

fn generation_of(issuer_name: &str) -> Option<u32> {
    issuer_name.strip_prefix("meshtrust-root-")?.parse().ok()
}

pub(crate) async fn observe_roots(
    bao: &dyn OpenBao,
    pki: &str,
) -> Result<(Vec<RootIssuerFacts>, usize, BTreeMap<u32, String>), EngineError> {
    let mut roots = Vec::new();
    let mut pems = BTreeMap::new();
    let mut foreign = 0;
    for issuer in bao.list_issuers(pki).await? {
        let Some(generation) = generation_of(&issuer.issuer_name) else {
            foreign += 1;
            continue;
        };
        let cert = parse_certs(
            &issuer.certificate_pem,
            &format!("OpenBao issuer {}", issuer.issuer_name),
        )
        .map_err(EngineError::pki("reading OpenBao's root"))?
        .remove(0);
        let key_internal = match bao.key_info(pki, &issuer.key_id).await {
            Ok(info) => info.internal,
            Err(_) => false,
        };
        pems.insert(generation, cert.pem.clone());
        roots.push(RootIssuerFacts {
            generation,
            issuer_id: issuer.issuer_id,
            cert: cert.facts,
            key_internal,
        });
    }
    roots.sort_by_key(|r| r.generation);
    Ok((roots, foreign, pems))
}

/// OpenBao's namespace, KV mount, auth mounts with their config and agent role, and meshtrust's policies.
async fn observe_bao_config(mesh: &Mesh, bao: &dyn OpenBao) -> Result<BaoConfigFacts, EngineError> {
    let mut config = BaoConfigFacts::default();
    if let Some(ns) = &mesh.openbao.namespace {
        let exists = bao.namespace_exists(ns).await?;
        config.namespace_exists = Some(exists);
        if !exists {
            return Ok(config);
        }
    }
    config.kv_mount = Some(match bao.mount(&mesh.openbao.kv_mount).await? {
        Some(m) => MountFacts::Present {
            kind: m.kind,
            max_lease_ttl: m.max_lease_ttl,
        },
        None => MountFacts::Absent,
    });
    for cluster in &mesh.clusters {
        let mount = &cluster.auth_mount;
        let mut auth = AuthFacts {
            kind: bao.auth_mount(mount).await?,
            ..Default::default()
        };
        if auth.kind.as_deref() == Some("kubernetes") {
            if let Some(cfg) = bao.read(&format!("auth/{mount}/config")).await? {
                let text = |k: &str| {
                    cfg.get(k)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                auth.kubernetes_host = text("kubernetes_host");
                auth.kubernetes_ca_cert = text("kubernetes_ca_cert");
            }
            if let Some(role) = bao.read(&format!("auth/{mount}/role/{AGENT_ROLE}")).await? {
                let list = |k: &str| -> Vec<String> {
                    role.get(k)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                auth.role = Some(RoleFacts {
                    service_account_names: list("bound_service_account_names"),
                    service_account_namespaces: list("bound_service_account_namespaces"),
                    policies: list("token_policies"),
                    token_ttl: role.get("token_ttl").and_then(Value::as_u64).unwrap_or(0),
                });
            }
        }
        config.auth.insert(cluster.name.clone(), auth);
    }
    let names = mesh
        .clusters
        .iter()
        .map(|c| agent_policy_name(&c.name))
        .chain([ADMIN_POLICY.to_string()]);
    for name in names {
        let text = bao.read_policy(&name).await?;
        config.policies.insert(name, text);
    }
    Ok(config)
}

pub async fn observe(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    clusters: &BTreeMap<String, Arc<dyn Cluster>>,
    now: i64,
    observe_config: bool,
) -> Result<Observation, EngineError> {
    let config = if observe_config {
        observe_bao_config(mesh, bao).await?
    } else {
        BaoConfigFacts::default()
    };
    let namespace_missing = config.namespace_exists == Some(false);
    let mut openbao = OpenBaoFacts {
        pki_mount: MountFacts::Absent,
        roots: vec![],
        foreign_issuers: 0,
        shared_root: None,
        config,
        published: BTreeMap::new(),
    };
    let mut roots_pem = BTreeMap::new();
    let mut shared_root = None;
    let mut index_version = 0;
    // Nothing can exist inside an OpenBao namespace that does not exist yet.
    if !namespace_missing {
        let (version, published) = read_index(bao, mesh).await?;
        index_version = version;
        openbao.published = published;
        match mesh.ca.mode {
            CaMode::BaoPki => {
                if let Some(mount) = bao.mount(&mesh.openbao.pki_mount).await? {
                    openbao.pki_mount = MountFacts::Present {
                        kind: mount.kind.clone(),
                        max_lease_ttl: mount.max_lease_ttl,
                    };
                    if mount.kind == "pki" {
                        let (roots, foreign, pems) =
                            observe_roots(bao, &mesh.openbao.pki_mount).await?;
                        openbao.roots = roots;
                        openbao.foreign_issuers = foreign;
                        roots_pem = pems;
                    }
                }
            }
            CaMode::SharedRoot => {
                shared_root = bao
                    .kv_get(&mesh.openbao.kv_mount, &mesh.ca.shared_root_kv_path)
                    .await?;
                if let Some(entry) = &shared_root {
                    let pem = entry
                    .data
                    .get(meshtrust_pki::shared_root::ROOT_CERT_FIELD)
                    .and_then(|v| v.expose_str())
                    .ok_or_else(|| {
                        EngineError::Inconsistent(format!(
                            "KV {}/{} has no root-cert.pem field; it is not a shared root bundle. Move it away or set ca.sharedRootKvPath",
                            mesh.openbao.kv_mount, mesh.ca.shared_root_kv_path
                        ))
                    })?;
                    let cert = parse_certs(pem, "shared root root-cert.pem")
                        .map_err(EngineError::pki("reading the shared root from KV"))?;
                    openbao.shared_root = Some(cert[0].facts.clone());
                }
            }
        }
    }

    // Only connected clusters are observed: an agent connects to its own cluster alone.
    let connected = mesh
        .clusters
        .iter()
        .filter(|s| clusters.contains_key(&s.name));
    let lookups = connected.map(|settings| async move {
        let cluster = clusters
            .get(&settings.name)
            .ok_or_else(|| EngineError::UnknownCluster(settings.name.clone()))?;
        let namespace_exists = cluster.namespace_exists(&settings.istio_namespace).await?;
        let secret = if namespace_exists {
            cluster
                .get_secret(&settings.istio_namespace, CACERTS)
                .await?
        } else {
            None
        };
        let cacerts = match &secret {
            None => CacertsFacts::Absent,
            Some(s)
                if s.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE) =>
            {
                CacertsFacts::Unmanaged
            }
            Some(s) => CacertsFacts::Managed(inspect(&s.data, now)),
        };
        let api = ClusterApiFacts {
            server: cluster.server().to_string(),
            ca_pem: cluster.api_ca_pem().map(str::to_string),
        };
        let (reader, reader_objects) = observe_reader(cluster.as_ref(), settings).await?;
        let (remote_secrets, remote_objects) = if namespace_exists {
            observe_remote_secrets(cluster.as_ref(), settings).await?
        } else {
            Default::default()
        };
        let desired_config_hash = config_hash(
            &desired_host(settings, cluster.server()),
            cluster.api_ca_pem(),
        );
        let facts = ClusterFacts {
            namespace_exists,
            cacerts,
            api,
            reader,
            remote_secrets,
            desired_config_hash,
        };
        Ok::<_, EngineError>((
            settings.name.clone(),
            facts,
            secret,
            reader_objects,
            remote_objects,
        ))
    });
    let mut facts_by_cluster = BTreeMap::new();
    let mut cacerts = BTreeMap::new();
    let mut readers = BTreeMap::new();
    let mut remote_secrets = BTreeMap::new();
    for result in futures::future::join_all(lookups).await {
        let (name, facts, secret, reader_objects, remote_objects) = result?;
        facts_by_cluster.insert(name.clone(), facts);
        cacerts.insert(name.clone(), secret);
        readers.insert(name.clone(), reader_objects);
        remote_secrets.insert(name, remote_objects);
    }
    Ok(Observation {
        facts: Observed {
            openbao,
            clusters: facts_by_cluster,
            now,
        },
        roots_pem,
        cacerts,
        shared_root,
        readers,
        remote_secrets,
        index_version,
        published_now: BTreeMap::new(),
    })
}

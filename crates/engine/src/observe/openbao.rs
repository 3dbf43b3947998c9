//! Observing OpenBao: meshtrust's configuration (namespace, KV mount, auth mounts and roles, policies) and the
//! CA (the PKI mount's `meshtrust-root-N` issuers, or the shared-root bundle in KV).

use std::collections::{BTreeMap, BTreeSet};

use meshtrust_core::auth_ownership::DepartedAuth;
use meshtrust_core::bao_plan::AGENT_ROLE;
use meshtrust_core::facts::{AuthFacts, BaoConfigFacts, ImportFacts, MountFacts, RootIssuerFacts};
use meshtrust_core::mesh::{CaMode, ImportRoot, Mesh};
use meshtrust_core::names::auth_mount_cluster;
use meshtrust_core::policy::{ADMIN_POLICY, agent_policy_cluster, agent_policy_name};
use meshtrust_core::ports::OpenBao;
use meshtrust_core::ports::{AuthMountInfo, ErrorKind};
use meshtrust_pki::import::{cert_problems, import_facts};
use meshtrust_pki::parse_certs;

use futures::{StreamExt, TryStreamExt};

use crate::EngineError;
use crate::names::root_generation;
use crate::published::{READ_CONCURRENCY, is_cluster_name};
use crate::snapshot::Snapshot;

fn mount_facts(mount: Option<meshtrust_core::ports::MountInfo>) -> MountFacts {
    match mount {
        Some(m) => MountFacts::Present {
            kind: m.kind,
            max_lease_ttl: m.max_lease_ttl,
        },
        None => MountFacts::Absent,
    }
}

/// meshtrust's root issuers in the PKI mount, as one observation found them.
pub(crate) struct RootsFound {
    /// Oldest generation first.
    pub roots: Vec<RootIssuerFacts>,
    /// Issuers that are not meshtrust's.
    pub foreign: usize,
    /// Each root's PEM by generation.
    pub pems: BTreeMap<u32, String>,
    /// `ca.importRoot.issuer`: the named issuer as found (`None` without one).
    pub import: Option<ImportFacts>,
}

/// meshtrust's root issuers: `meshtrust-root-<n>`, and under `ca.importRoot.issuer` the named issuer as
/// generation 1 (while no issuer is named `meshtrust-root-1`), if it can be the mesh's root.
pub(crate) async fn observe_roots(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    now: i64,
) -> Result<RootsFound, EngineError> {
    let pki = &mesh.openbao.pki_mount;
    let import_ref = match &mesh.ca.import_root {
        Some(ImportRoot::Issuer(reference)) => Some(reference.as_str()),
        _ => None,
    };
    let issuers = bao.list_issuers(pki).await?;
    let has_first = issuers
        .iter()
        .any(|i| root_generation(&i.issuer_name) == Some(1));
    let mut found = RootsFound {
        roots: Vec::new(),
        foreign: 0,
        pems: BTreeMap::new(),
        import: import_ref.map(|_| ImportFacts::Missing),
    };
    for issuer in issuers {
        let imported = import_ref
            .is_some_and(|r| !has_first && (issuer.issuer_name == r || issuer.issuer_id == r));
        let generation = match root_generation(&issuer.issuer_name) {
            Some(generation) => generation,
            None if imported => 1,
            None => {
                found.foreign += 1;
                continue;
            }
        };
        let cert = parse_certs(
            &issuer.certificate_pem,
            &format!("OpenBao issuer {}", issuer.issuer_name),
        )
        .map_err(EngineError::pki("reading OpenBao's root"))?
        .remove(0);
        if imported {
            let what = format!("PKI issuer {pki}/{}", import_ref.unwrap_or_default());
            let mut problems = cert_problems(&cert.facts, cert.self_signed, &what, now);
            if issuer.key_id.is_empty() {
                problems.push(format!("{what} has no private key in OpenBao, so it cannot sign intermediates; import the root with its key"));
            }
            if !problems.is_empty() {
                found.foreign += 1;
                found.import = Some(ImportFacts::Invalid { problems });
                continue;
            }
            found.import = Some(ImportFacts::Ready {
                cert: cert.facts.clone(),
            });
        }
        // A key OpenBao will not describe is treated as not internal, which the planner reports.
        let key_internal = match bao.key_info(pki, &issuer.key_id).await {
            Ok(info) => info.internal,
            Err(_) => false,
        };
        found.pems.insert(generation, cert.pem.clone());
        found.roots.push(RootIssuerFacts {
            generation,
            issuer_id: issuer.issuer_id,
            cert: cert.facts,
            key_internal,
        });
    }
    found.roots.sort_by_key(|r| r.generation);
    Ok(found)
}

/// A mesh cluster's auth mount as `sys/auth` listed it (`mounted`), with its config and agent role.
async fn observe_auth(
    bao: &dyn OpenBao,
    mount: &str,
    mounted: Option<&AuthMountInfo>,
) -> Result<AuthFacts, EngineError> {
    let mut auth = AuthFacts {
        kind: mounted.map(|m| m.kind.clone()),
        description: mounted.map(|m| m.description.clone()).unwrap_or_default(),
        ..Default::default()
    };
    if auth.kind.as_deref() == Some("kubernetes") {
        if let Some(config) = bao.kubernetes_auth_config(mount).await? {
            let some = |s: String| Some(s).filter(|s| !s.is_empty());
            auth.kubernetes_host = some(config.kubernetes_host);
            auth.kubernetes_ca_cert = some(config.kubernetes_ca_cert);
        }
        auth.role = bao.kubernetes_auth_role(mount, AGENT_ROLE).await?;
        auth.other_roles = other_roles(bao, mount).await?;
    }
    Ok(auth)
}

/// The mount's roles besides meshtrust's; `None` when the token may not list them (an admin policy from a
/// release before meshtrust listed roles): then nothing is removed on their account.
async fn other_roles(bao: &dyn OpenBao, mount: &str) -> Result<Option<Vec<String>>, EngineError> {
    match bao.kubernetes_auth_roles(mount).await {
        Ok(roles) => Ok(Some(
            roles.into_iter().filter(|r| r != AGENT_ROLE).collect(),
        )),
        Err(e) if e.kind == ErrorKind::Denied => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Kubernetes auth mounts the mesh file no longer uses that hold what meshtrust made for a cluster that left:
/// a mount it made (its description names the cluster), or its agent role in somebody else's mount.
async fn departed_auth(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    mounted: &BTreeMap<String, AuthMountInfo>,
) -> Result<BTreeMap<String, DepartedAuth>, EngineError> {
    let unused = mounted.iter().filter(|(path, info)| {
        info.kind == "kubernetes" && !mesh.clusters.iter().any(|c| &c.auth_mount == *path)
    });
    let mut departed = BTreeMap::new();
    for (path, info) in unused {
        if let Some(cluster) = auth_mount_cluster(&info.description) {
            if !is_cluster_name(cluster) || mesh.cluster(cluster).is_some() {
                continue;
            }
            let roles = match bao.kubernetes_auth_roles(path).await {
                Ok(roles) => Some(roles),
                Err(e) if e.kind == ErrorKind::Denied => None,
                Err(e) => return Err(e.into()),
            };
            departed.insert(
                path.clone(),
                DepartedAuth {
                    cluster: cluster.to_string(),
                    made_by_meshtrust: true,
                    // Unknown roles: assume the agent's is there, so only it is deleted.
                    agent_role: roles
                        .as_ref()
                        .is_none_or(|r| r.iter().any(|n| n == AGENT_ROLE)),
                    other_roles: roles.map(|r| r.into_iter().filter(|n| n != AGENT_ROLE).collect()),
                },
            );
        } else if let Some(cluster) = foreign_agent_role_cluster(bao, path).await? {
            departed.insert(
                path.clone(),
                DepartedAuth {
                    cluster,
                    made_by_meshtrust: false,
                    agent_role: true,
                    other_roles: other_roles(bao, path).await?,
                },
            );
        }
    }
    Ok(departed)
}

/// The cluster whose agent meshtrust's role in somebody else's mount let in, if the role is there. A token that
/// may not read it never had meshtrust write it (the admin policy grants the role only on mesh clusters'
/// mounts), so a denial means none of meshtrust's.
async fn foreign_agent_role_cluster(
    bao: &dyn OpenBao,
    mount: &str,
) -> Result<Option<String>, EngineError> {
    let role = match bao.kubernetes_auth_role(mount, AGENT_ROLE).await {
        Ok(role) => role,
        Err(e) if e.kind == ErrorKind::Denied => None,
        Err(e) => return Err(e.into()),
    };
    Ok(role.and_then(|r| {
        r.policies
            .iter()
            .find_map(|p| agent_policy_cluster(p).map(str::to_string))
    }))
}

/// OpenBao's namespace, KV mount, auth mounts with their config and agent role, and meshtrust's policies.
pub(crate) async fn observe_config(
    mesh: &Mesh,
    bao: &dyn OpenBao,
) -> Result<BaoConfigFacts, EngineError> {
    let mut config = BaoConfigFacts::default();
    if let Some(ns) = &mesh.openbao.namespace {
        let exists = bao.namespace_exists(ns).await?;
        config.namespace_exists = Some(exists);
        if !exists {
            return Ok(config);
        }
    }
    config.kv_mount = Some(mount_facts(bao.mount(&mesh.openbao.kv_mount).await?));
    let mounted = bao.auth_mounts().await?;
    config.departed_auth = departed_auth(mesh, bao, &mounted).await?;
    let listed_policies: BTreeSet<String> = bao.list_policies().await?.into_iter().collect();
    config.departed_policies = listed_policies
        .iter()
        .filter(|p| {
            agent_policy_cluster(p).is_some_and(|c| is_cluster_name(c) && mesh.cluster(c).is_none())
        })
        .cloned()
        .collect();
    config.auth = futures::stream::iter(&mesh.clusters)
        .map(|cluster| {
            let listed = mounted.get(&cluster.auth_mount);
            async move {
                let auth = observe_auth(bao, &cluster.auth_mount, listed).await?;
                Ok::<_, EngineError>((cluster.name.clone(), auth))
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let names = mesh
        .clusters
        .iter()
        .map(|c| agent_policy_name(&c.name))
        .chain([ADMIN_POLICY.to_string()]);
    // A policy the listing does not show is absent: only listed ones are read (none in a new mesh).
    let listed_policies = &listed_policies;
    config.policies = futures::stream::iter(names)
        .map(|name| async move {
            let text = if listed_policies.contains(&name) {
                bao.read_policy(&name).await?
            } else {
                None
            };
            Ok::<_, EngineError>((name, text))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(config)
}

/// `ca.importRoot.kvPath`: the bundle in KV, checked (the admin only: an agent may not read it).
async fn observe_import_bundle(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    snapshot: &mut Snapshot,
) -> Result<(), EngineError> {
    let Some(ImportRoot::KvPath(path)) = &mesh.ca.import_root else {
        return Ok(());
    };
    let kv = &mesh.openbao.kv_mount;
    let entry = bao.kv_get(kv, path).await?;
    let facts = match &entry {
        None => ImportFacts::Missing,
        Some(entry) => import_facts(&entry.data, &format!("KV {kv}/{path}"), snapshot.facts.now),
    };
    // A root imported from that bundle had its key outside OpenBao, whatever OpenBao says of it now.
    if let ImportFacts::Ready { cert } = &facts {
        for root in &mut snapshot.facts.openbao.roots {
            if root.cert.fingerprint == cert.fingerprint {
                root.key_internal = false;
            }
        }
    }
    snapshot.facts.openbao.import = Some(facts);
    snapshot.import_bundle = entry;
    Ok(())
}

/// The CA as OpenBao holds it, in the mesh file's mode. `admin`: also the bundle `ca.importRoot.kvPath` names.
pub(crate) async fn observe_ca(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    snapshot: &mut Snapshot,
    admin: bool,
) -> Result<(), EngineError> {
    match mesh.ca.mode {
        CaMode::BaoPki => {
            let mount = bao.mount(&mesh.openbao.pki_mount).await?;
            let is_pki = mount.as_ref().is_some_and(|m| m.kind == "pki");
            snapshot.facts.openbao.pki_mount = mount_facts(mount);
            if is_pki {
                let found = observe_roots(bao, mesh, snapshot.facts.now).await?;
                let openbao = &mut snapshot.facts.openbao;
                openbao.roots = found.roots;
                openbao.foreign_issuers = found.foreign;
                openbao.import = found.import;
                snapshot.roots_pem = found.pems;
            } else if matches!(mesh.ca.import_root, Some(ImportRoot::Issuer(_))) {
                snapshot.facts.openbao.import = Some(ImportFacts::Missing);
            }
            if admin {
                observe_import_bundle(mesh, bao, snapshot).await?;
            }
        }
        CaMode::SharedRoot => {
            let openbao = &mut snapshot.facts.openbao;
            let entry = bao
                .kv_get(&mesh.openbao.kv_mount, &mesh.ca.shared_root_kv_path)
                .await?;
            if let Some(entry) = &entry {
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
            snapshot.shared_root = entry;
        }
    }
    Ok(())
}

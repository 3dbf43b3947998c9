//! Planning cross-cluster discovery: each cluster's reader identity and published kubeconfig, and every peer's
//! `istio-remote-secret-<peer>` in every cluster. Pure, like the CA planner.
//!
//! Only clusters present in the observation are acted on, so an agent that observes just its own cluster plans
//! just its own cluster's share.

use std::collections::BTreeSet;

use crate::duration::humanize;
use crate::facts::{ClusterFacts, ObjectState, Observed};
use crate::istio::remote_secret_name;
use crate::mesh::{ClusterSettings, Mesh};
use crate::plan::{Action, Blocker, Change, Domain, Op, Plan, Target};

fn cluster_target(name: &str) -> Target {
    Target::Cluster {
        name: name.to_string(),
    }
}

/// `adopt` (`apply --adopt`): take over remote secrets istioctl or a secrets operator wrote, in place.
pub fn plan_remote_secrets(mesh: &Mesh, observed: &Observed, adopt: bool, plan: &mut Plan) {
    // A set: every cluster asks it about every peer (a million times in a 1,000-cluster admin run).
    let mut publishing: BTreeSet<&str> = BTreeSet::new();
    for cluster in &mesh.clusters {
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        plan_reader(cluster, facts, plan);
        if plan_publish(mesh, observed, cluster, facts, plan) {
            publishing.insert(&cluster.name);
        }
    }
    for cluster in &mesh.clusters {
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        let peers = Peers {
            publishing: &publishing,
            adopt,
        };
        plan_peer_secrets(mesh, observed, cluster, facts, &peers, plan);
        plan_stale_secrets(mesh, observed, cluster, facts, &publishing, plan);
    }
    plan_unpublish(mesh, observed, plan);
}

/// The reader identity (ServiceAccount and RBAC) peers' istiod use to read this cluster.
fn plan_reader(cluster: &ClusterSettings, facts: &ClusterFacts, plan: &mut Plan) {
    let reader = &facts.reader;
    let pending: Vec<&str> = [
        ("ServiceAccount", reader.service_account),
        ("ClusterRole", reader.cluster_role),
        ("ClusterRoleBinding", reader.binding),
    ]
    .iter()
    .filter(|(_, s)| {
        matches!(
            s,
            ObjectState::Absent | ObjectState::Managed { up_to_date: false }
        )
    })
    .map(|(k, _)| *k)
    .collect();
    if !pending.is_empty() {
        let creating = reader.service_account == ObjectState::Absent;
        plan.changes.push(Change {
            target: cluster_target(&cluster.name),
            op: if creating { Op::Create } else { Op::Update },
            resource: format!(
                "reader identity {}/istio-reader-service-account",
                cluster.istio_namespace
            ),
            summary: format!("{} with Istio's reader rules", pending.join(", ")),
            reason: "peers' istiod read this cluster through it".into(),
            action: Action::EnsureReader {
                cluster: cluster.name.clone(),
            },
        });
    }
}

/// Publishes this cluster's kubeconfig in OpenBao when it is missing, void, changed or about to expire.
/// True when it is published in this plan.
fn plan_publish(
    mesh: &Mesh,
    observed: &Observed,
    cluster: &ClusterSettings,
    facts: &ClusterFacts,
    plan: &mut Plan,
) -> bool {
    let rs = &mesh.remote_secrets;
    let reader = &facts.reader;
    let reason = match observed.openbao.published.get(&cluster.name) {
        None => Some("it is not published in OpenBao yet".to_string()),
        // A new ServiceAccount has a new UID: tokens of the old one no longer authenticate.
        Some(_) if reader.service_account == ObjectState::Absent => Some(
            "the reader ServiceAccount is being (re)created, so the published token is void"
                .to_string(),
        ),
        Some(p) if p.config_hash != facts.desired_config_hash => {
            Some("the API address or CA peers must use changed".to_string())
        }
        // `tokenExpires` comes from shared KV data: saturate rather than overflow on a hostile value.
        Some(p)
            if p.token_expires.saturating_sub(observed.now)
                < i64::try_from(rs.refresh_before.seconds()).unwrap_or(i64::MAX) =>
        {
            Some(format!(
                "its reader token expires in {}, within refreshBefore {}",
                humanize(p.token_expires.saturating_sub(observed.now)),
                rs.refresh_before
            ))
        }
        Some(_) => None,
    };
    let Some(reason) = reason else {
        return false;
    };
    plan.changes.push(Change {
        target: Target::OpenBao,
        op: Op::Update,
        resource: format!(
            "KV {}/{}/{}",
            mesh.openbao.kv_mount, rs.kv_path, cluster.name
        ),
        summary: format!(
            "kubeconfig for {} with a fresh {} reader token (check-and-set), index bumped",
            cluster.name, rs.token_ttl
        ),
        reason,
        action: Action::PublishRemoteSecret {
            cluster: cluster.name.clone(),
        },
    });
    true
}

/// What the peer-secret planning needs besides the observation: who publishes in this plan, and `--adopt`.
struct Peers<'a> {
    publishing: &'a BTreeSet<&'a str>,
    adopt: bool,
}

/// Every peer's remote secret in this cluster, copied from what the peer published.
fn plan_peer_secrets(
    mesh: &Mesh,
    observed: &Observed,
    cluster: &ClusterSettings,
    facts: &ClusterFacts,
    peers: &Peers<'_>,
    plan: &mut Plan,
) {
    let publishing = peers.publishing;
    for peer in mesh.clusters.iter().filter(|p| p.name != cluster.name) {
        let published = observed.openbao.published.get(&peer.name);
        let fresh = publishing.contains(peer.name.as_str());
        if published.is_none() && !fresh {
            continue;
        }
        let resource = format!(
            "Secret {}/{}",
            cluster.istio_namespace,
            remote_secret_name(&peer.name)
        );
        let reason = match facts.remote_secrets.get(&peer.name) {
            // Rewritten in place, never deleted first: istiod keeps the peer throughout (an identical cluster
            // ID with a new kubeconfig swaps its client).
            Some(existing) if !existing.managed && peers.adopt => Some(format!(
                "--adopt: taking over {}'s remote secret in place (made by istioctl or a secrets operator)",
                peer.name
            )),
            Some(existing) if !existing.managed => {
                plan.blockers.push(Blocker {
                    domain: Domain::RemoteSecrets,
                    target: cluster_target(&cluster.name),
                    resource,
                    reason: "exists and is not managed by meshtrust (made by istioctl or a secrets operator); meshtrust never overwrites it".into(),
                    fix: "rerun with --adopt to let meshtrust take it over in place (never delete it first: istiod would drop the peer until it is back)".into(),
                });
                continue;
            }
            None => Some(format!("new peer {}", peer.name)),
            Some(_) if fresh => Some(format!("{} publishes a new kubeconfig", peer.name)),
            Some(existing) => match published {
                Some(p) if existing.kv_version != Some(p.version) => Some(format!(
                    "{} published version {} (this copy is from {})",
                    peer.name,
                    p.version,
                    existing
                        .kv_version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "an unknown version".into())
                )),
                _ => None,
            },
        };
        if let Some(reason) = reason {
            let creating = !facts.remote_secrets.contains_key(&peer.name);
            plan.changes.push(Change {
                target: cluster_target(&cluster.name),
                op: if creating { Op::Create } else { Op::Update },
                resource,
                summary: format!(
                    "kubeconfig of {} (istioctl's format, labelled istio/multiCluster=true)",
                    peer.name
                ),
                reason,
                action: Action::SyncRemoteSecret {
                    cluster: cluster.name.clone(),
                    peer: peer.name.clone(),
                },
            });
        }
    }
}

/// Remote secrets meshtrust wrote for peers that left the mesh file. Membership comes from the mesh file alone:
/// a peer that is listed but whose published entry is missing or unreadable keeps its Secret (with a warning),
/// because what cannot be read is no reason to delete.
fn plan_stale_secrets(
    mesh: &Mesh,
    observed: &Observed,
    cluster: &ClusterSettings,
    facts: &ClusterFacts,
    publishing: &BTreeSet<&str>,
    plan: &mut Plan,
) {
    for (peer, existing) in &facts.remote_secrets {
        if !existing.managed {
            continue;
        }
        let in_mesh = mesh.clusters.iter().any(|c| &c.name == peer) && peer != &cluster.name;
        let in_openbao =
            observed.openbao.published.contains_key(peer) || publishing.contains(peer.as_str());
        if in_mesh {
            if !in_openbao {
                plan.warnings.push(format!(
                    "cluster {}: {peer}'s published entry is missing or unreadable in OpenBao; keeping {} as it is until {peer}'s agent (or `meshtrust apply`) publishes again",
                    cluster.name,
                    remote_secret_name(peer)
                ));
            }
            continue;
        }
        plan.changes.push(Change {
            target: cluster_target(&cluster.name),
            op: Op::Delete,
            resource: format!(
                "Secret {}/{}",
                cluster.istio_namespace,
                remote_secret_name(peer)
            ),
            summary: "istiod drops the peer when the Secret goes".into(),
            reason: format!("{peer} is no longer in the mesh file"),
            action: Action::DeleteRemoteSecret {
                cluster: cluster.name.clone(),
                peer: peer.clone(),
            },
        });
    }
}

/// Published kubeconfigs of clusters that left the mesh file.
pub(crate) fn plan_unpublish(mesh: &Mesh, observed: &Observed, plan: &mut Plan) {
    let rs = &mesh.remote_secrets;
    for gone in &observed.openbao.departed {
        plan.changes.push(Change {
            target: Target::OpenBao,
            op: Op::Delete,
            resource: format!("KV {}/{}/{gone}", mesh.openbao.kv_mount, rs.kv_path),
            summary: "its reader kubeconfig, which peers no longer need".into(),
            reason: format!("{gone} is no longer in the mesh file"),
            action: Action::UnpublishRemoteSecret {
                cluster: gone.clone(),
            },
        });
    }
}

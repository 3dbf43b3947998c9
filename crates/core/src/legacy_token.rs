//! istioctl's long-lived reader token. `istioctl create-remote-secret` (Kubernetes 1.24+) puts a
//! `kubernetes.io/service-account-token` Secret `istio-reader-service-account-istio-remote-secret-token` in the
//! cluster it describes; the token in it never expires, and copies of it sit in every peer's remote secret and in
//! the seed's KV entries. Once every peer reads the cluster with meshtrust's bound (expiring) token, the Secret
//! goes, which voids every copy. Until then `plan` says what it waits for.

use crate::facts::Observed;
use crate::istio::READER_SERVICE_ACCOUNT;
use crate::mesh::{ClusterSettings, Mesh};
use crate::plan::{Action, Change, Op, Plan, Target};

/// The name istioctl gives the token Secret it creates for the reader ServiceAccount.
pub fn legacy_token_secret_name() -> String {
    format!("{READER_SERVICE_ACCOUNT}-istio-remote-secret-token")
}

/// The peers that do not yet read `cluster` with what it published through meshtrust: a peer not connected,
/// one without a managed remote secret for it, or one holding another version than the published one.
fn peers_not_on_bound_tokens(
    mesh: &Mesh,
    observed: &Observed,
    cluster: &ClusterSettings,
) -> Vec<String> {
    let published = observed.openbao.published.get(&cluster.name);
    mesh.clusters
        .iter()
        .filter(|p| p.name != cluster.name)
        .filter(|peer| {
            let synced = observed
                .clusters
                .get(&peer.name)
                .and_then(|f| f.remote_secrets.get(&cluster.name))
                .is_some_and(|rs| {
                    rs.managed && published.is_some_and(|p| rs.kv_version == Some(p.version))
                });
            !synced
        })
        .map(|p| p.name.clone())
        .collect()
}

/// Removes istioctl's long-lived token Secret from each cluster whose every peer uses meshtrust's bound token,
/// and says which peers the others wait for. Runs after the remote-secret planning: a peer synced in this very
/// plan counts only on the next run, when the write has been seen.
pub fn plan_legacy_tokens(mesh: &Mesh, observed: &Observed, plan: &mut Plan) {
    let name = legacy_token_secret_name();
    for cluster in &mesh.clusters {
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        if !facts.legacy_reader_token {
            continue;
        }
        let resource = format!("Secret {}/{name}", cluster.istio_namespace);
        let waiting = peers_not_on_bound_tokens(mesh, observed, cluster);
        if !waiting.is_empty() {
            plan.notes.push(format!(
                "cluster {}: istioctl's long-lived reader token ({resource}) stays until every peer reads {} with \
                 meshtrust's bound token; waiting for {}",
                cluster.name,
                cluster.name,
                waiting.join(", ")
            ));
            continue;
        }
        plan.changes.push(Change {
            target: Target::Cluster {
                name: cluster.name.clone(),
            },
            op: Op::Delete,
            resource,
            summary: "istioctl's long-lived reader token".into(),
            reason: format!(
                "every peer reads {} with meshtrust's bound token now; deleting it voids every copy of the \
                 never-expiring token (old remote secrets, the seed's KV entries)",
                cluster.name
            ),
            action: Action::DeleteLegacyReaderToken {
                cluster: cluster.name.clone(),
            },
        });
    }
}

//! Publishing a cluster's trust facts (check-and-set at the version observed), and what the rest of the engine
//! asks of them: whether a rotation is under way, so an agent keeps reconciling until the mesh settles.

use std::collections::BTreeMap;

use meshtrust_core::facts::CacertsFacts;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::{Cluster, OpenBao};
use meshtrust_core::rotation_plan::mesh_rotation;
use meshtrust_core::secret::SecretBytes;
use meshtrust_core::trust_facts::{TRUST_KV_FIELD, TrustFacts, trust_kv_path};

use crate::EngineError;
use crate::published::{Wrote, bump_marker, current_version};
use crate::snapshot::Snapshot;

/// Writes `cluster`'s entry. A conflict means another run of the same agent wrote it meanwhile: the caller
/// observes and plans again.
pub(crate) async fn publish(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    snapshot: &Snapshot,
    cluster: &str,
    facts: &TrustFacts,
) -> Result<String, EngineError> {
    let kv = &mesh.openbao.kv_mount;
    let path = trust_kv_path(cluster);
    let text = serde_json::to_string(facts).map_err(|e| {
        EngineError::Inconsistent(format!("cannot encode {cluster}'s trust facts: {e}"))
    })?;
    let data = BTreeMap::from([(TRUST_KV_FIELD.to_string(), SecretBytes::new(text))]);
    let cas = match snapshot.facts().trust.published.get(cluster) {
        Some(p) => p.version,
        None => current_version(bao, kv, &path).await?,
    };
    let version = bao.kv_put(kv, &path, &data, cas).await?;
    // Peers follow trust facts as they follow published entries: through the change marker naming the writer.
    bump_marker(bao, mesh, cluster, Wrote::Trust).await?;
    Ok(format!("published {kv}/{path} (version {version})"))
}

/// The fingerprints of the roots istiod serves in `namespace` (`istio-ca-root-cert`); `None` when no istiod
/// wrote them. An agent watches them during a rotation: istiod's reload moves no marker.
pub async fn served_roots(
    cluster: &dyn Cluster,
    namespace: &str,
) -> Result<Option<Vec<String>>, EngineError> {
    crate::observe::served_roots(cluster, namespace).await
}

impl Snapshot {
    /// Seconds until the dwell of a rotation under way ends and older roots may be dropped; `None` outside the
    /// dwell. No marker moves when it ends, so an agent wakes for it.
    pub fn dwell_left(&self, mesh: &Mesh) -> Option<i64> {
        let newest = self.facts().openbao.newest_root()?.generation;
        mesh_rotation(mesh, self.facts(), newest, PlanOptions::default()).dwell_left
    }

    /// A root rotation is under way as far as this snapshot shows: a second root exists and some connected
    /// cluster, or some published entry, is not yet on the newest root only. While this holds, an agent also
    /// re-reads every peer's trust facts in its periodic full re-read (a peer's progress otherwise reaches it
    /// through the change marker), and wakes for the dwell's end.
    pub fn rotation_pending(&self) -> bool {
        let facts = self.facts();
        let Some(newest) = facts.openbao.newest_root() else {
            return false;
        };
        if facts.openbao.roots.len() < 2 {
            // One root: only a root OpenBao does not hold (a restored or replaced store) is still to move off.
            return facts.connected_foreign_root();
        }
        let fp = newest.cert.fingerprint.as_str();
        let own = facts.clusters.values().any(|c| match &c.cacerts {
            CacertsFacts::Managed(s) => {
                s.trusted_roots != [fp] || s.issuer_fingerprint.as_deref() != Some(fp)
            }
            _ => false,
        });
        let peers = facts.trust.published.values().any(|p| {
            p.facts
                .as_ref()
                .is_none_or(|f| f.settled_since.as_ref().is_none_or(|m| m.root != fp))
        });
        own || peers || facts.trust.published.len() < facts.clusters.len()
    }

    /// Some cluster this snapshot observed directly holds a `cacerts` that is not on the newest root only: a
    /// rotation is still moving through the clusters. (What agents published is not consulted: an admin that
    /// sees every cluster needs no hint.)
    pub fn rotation_under_way_in_clusters(&self) -> bool {
        let facts = self.facts();
        let Some(newest) = facts.openbao.newest_root() else {
            return false;
        };
        let fp = newest.cert.fingerprint.as_str();
        facts.clusters.values().any(|c| match &c.cacerts {
            CacertsFacts::Managed(s) => {
                s.trusted_roots != [fp] || s.issuer_fingerprint.as_deref() != Some(fp)
            }
            _ => false,
        })
    }
}

//! What one observation found, frozen: the planner's facts plus the material `apply` needs (PEMs, the objects
//! as read with their resourceVersions). Nothing mutates a snapshot; a change made during `apply` lives in the
//! applier's own run state.

use std::collections::BTreeMap;

use meshtrust_core::facts::{CacertsFacts, Observed};
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{KubeObject, KvEntry, SecretObject};
use meshtrust_core::secret::SecretBytes;

/// The reader identity's three objects in one cluster, as found.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReaderObjects {
    pub service_account: Option<KubeObject>,
    pub cluster_role: Option<KubeObject>,
    pub binding: Option<KubeObject>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) facts: Observed,
    /// Root certificates by generation.
    pub(crate) roots_pem: BTreeMap<u32, String>,
    /// Each cluster's `cacerts` as read, if present.
    pub(crate) cacerts: BTreeMap<String, Option<SecretObject>>,
    /// shared-root mode: the KV entry as read.
    pub(crate) shared_root: Option<KvEntry>,
    /// `ca.importRoot.kvPath`: the KV bundle as read (by the admin only).
    pub(crate) import_bundle: Option<KvEntry>,
    pub(crate) readers: BTreeMap<String, ReaderObjects>,
    /// Each cluster's remote secrets as read, by peer.
    pub(crate) remote_secrets: BTreeMap<String, BTreeMap<String, SecretObject>>,
    /// The change marker's KV version when observed (0: none yet).
    pub(crate) index_version: u64,
    /// Published kubeconfigs read during this observation, by cluster, with their KV version.
    pub(crate) peer_kubeconfigs: BTreeMap<String, (SecretBytes, u64)>,
}

/// A remote secret found in a cluster, with the kubeconfig it carries (for `verify` to try it out).
pub struct SyncedKubeconfig<'a> {
    pub cluster: &'a str,
    pub peer: &'a str,
    pub namespace: &'a str,
    pub secret_name: &'a str,
    pub kubeconfig: &'a str,
}

/// How one peer's remote secret stands in a cluster (for the agent's metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSync {
    pub peer: String,
    pub stale: bool,
    /// When the reader token the peer published expires (Unix seconds), if it published.
    pub token_expires: Option<i64>,
}

impl Snapshot {
    /// The facts the planner compares; also what `status` and `verify` report.
    pub fn facts(&self) -> &Observed {
        &self.facts
    }

    /// The change marker's KV version when observed; the agent polls for a different one.
    pub fn index_version(&self) -> u64 {
        self.index_version
    }

    /// The expiry (Unix seconds) of a cluster's managed intermediate, if it has one that parsed.
    pub fn intermediate_expiry(&self, cluster: &str) -> Option<i64> {
        match &self.facts.clusters.get(cluster)?.cacerts {
            CacertsFacts::Managed(state) => state.ca_cert.as_ref().map(|c| c.not_after),
            _ => None,
        }
    }

    /// The expiry (Unix seconds) of the root that signed a cluster's managed intermediate: the chain ends there
    /// too, whatever the intermediate says.
    pub fn signing_root_expiry(&self, cluster: &str) -> Option<i64> {
        match &self.facts.clusters.get(cluster)?.cacerts {
            CacertsFacts::Managed(state) => {
                let issuer = state.issuer_fingerprint.as_deref()?;
                let root = self.facts.openbao.root_by_fingerprint(issuer)?;
                Some(root.cert.not_after)
            }
            _ => None,
        }
    }

    /// For each peer of the mesh file whose remote secret `cluster` holds: whether that secret lags the peer's
    /// published entry (absent, copied from another KV version, or the peer has published nothing readable), and
    /// when the token the peer published expires. Secrets meshtrust does not manage are left out.
    pub fn peer_sync(&self, mesh: &Mesh, cluster: &str) -> Vec<PeerSync> {
        let Some(facts) = self.facts.clusters.get(cluster) else {
            return vec![];
        };
        mesh.clusters
            .iter()
            .map(|c| &c.name)
            .filter(|peer| peer.as_str() != cluster)
            .filter_map(|peer| {
                let secret = facts.remote_secrets.get(peer);
                if secret.is_some_and(|s| !s.managed) {
                    return None;
                }
                let published = self.facts.openbao.published.get(peer);
                Some(PeerSync {
                    peer: peer.clone(),
                    stale: published
                        .is_none_or(|p| secret.and_then(|s| s.kv_version) != Some(p.version)),
                    token_expires: published.map(|p| p.token_expires),
                })
            })
            .collect()
    }

    /// Every remote secret found whose kubeconfig is readable text, by cluster and peer.
    pub fn synced_kubeconfigs(&self) -> Vec<SyncedKubeconfig<'_>> {
        let mut found = Vec::new();
        for (cluster, secrets) in &self.remote_secrets {
            for (peer, secret) in secrets {
                if let Some(kubeconfig) = secret.data.get(peer).and_then(|v| v.expose_str()) {
                    found.push(SyncedKubeconfig {
                        cluster,
                        peer,
                        namespace: &secret.namespace,
                        secret_name: &secret.name,
                        kubeconfig,
                    });
                }
            }
        }
        found
    }
}

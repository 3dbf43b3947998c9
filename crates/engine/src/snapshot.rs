//! What one observation found, frozen: the planner's facts plus the material `apply` needs (PEMs, the objects
//! as read with their resourceVersions). Nothing mutates a snapshot; a change made during `apply` lives in the
//! applier's own run state.

use std::collections::BTreeMap;

use meshtrust_core::facts::{CacertsFacts, Observed};
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

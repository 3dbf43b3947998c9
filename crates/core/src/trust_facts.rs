//! The trust facts each cluster publishes to OpenBao, so that a root rotation advances on the whole mesh's
//! state even though an agent sees only its own cluster. Fingerprints only: no certificate, no key.
//!
//! An agent writes its own cluster's entry at `<kv>/istio/meshtrust-trust/<cluster>` (its policy allows no
//! other); every engine reads every entry. Entries are written only once a second root exists, and only when
//! they change, so a mesh that never rotated stores nothing. This module is the format; what to publish and how
//! the planner reads it are in [`crate::trust_view`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// KV path (inside the KV mount) under which each cluster's entry lives.
pub const TRUST_KV_PATH: &str = "istio/meshtrust-trust";
/// The field of the KV entry holding the JSON text.
pub const TRUST_KV_FIELD: &str = "trust";
/// The ConfigMap istiod writes into every namespace with the roots it serves to workloads.
pub const ROOT_CERT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// Its key holding the PEM roots.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";

/// The KV path of one cluster's entry.
pub fn trust_kv_path(cluster: &str) -> String {
    format!("{TRUST_KV_PATH}/{cluster}")
}

/// When a cluster was first seen in a state concerning one root (its fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub root: String,
    /// Unix seconds.
    pub at: i64,
}

/// One cluster's trust, as it publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustFacts {
    /// [`crate::names::FORMAT_VERSION`] of the writer; 0 when absent (written before formats were versioned).
    #[serde(default)]
    pub format_version: u32,
    /// Fingerprints of the roots in the cluster's `cacerts` `root-cert.pem`, in file order.
    pub trusted_roots: Vec<String>,
    /// Fingerprint of the root that signed the cluster's intermediate.
    pub signing_root: Option<String>,
    /// Fingerprints of the roots istiod serves in `istio-ca-root-cert`; `None` when istiod wrote no such
    /// ConfigMap (it does not run).
    pub served_roots: Option<Vec<String>>,
    /// Since when the cluster trusts (and its istiod serves) the newest root: rotation phase 1 reached.
    pub trusts_since: Option<Mark>,
    /// Since when the cluster signs with the newest root: rotation phase 2 reached; the dwell counts from it.
    pub signs_since: Option<Mark>,
    /// Since when the cluster trusts only the newest root: rotation phase 3 reached.
    pub settled_since: Option<Mark>,
    /// When this entry was written (Unix seconds, the writer's clock). Peers use it to tell an entry that
    /// OpenBao handed back from an older snapshot from one written after a root it does not mention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<i64>,
    /// Fields a newer release wrote that this one does not know: kept as they are when the entry is rewritten.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl TrustFacts {
    /// Equal apart from when they were written: nothing to publish.
    pub fn same_as(&self, other: &TrustFacts) -> bool {
        TrustFacts {
            published_at: None,
            ..self.clone()
        } == TrustFacts {
            published_at: None,
            ..other.clone()
        }
    }
}

/// A published entry and the KV version it was read at (for check-and-set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedTrust {
    pub version: u64,
    /// `None` when the entry does not parse: its owner rewrites it.
    pub facts: Option<TrustFacts>,
}

/// What was observed of the mesh's trust beyond `cacerts`: every cluster's published entry, and the roots the
/// connected clusters' istiods serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrustObservation {
    /// Whether the entries were read at all (only once a second root exists).
    pub read: bool,
    pub published: BTreeMap<String, PublishedTrust>,
    /// Connected clusters: the fingerprints in `istio-ca-root-cert`, `None` when it is absent.
    pub served: BTreeMap<String, Option<Vec<String>>>,
}

impl TrustObservation {
    pub fn facts_of(&self, cluster: &str) -> Option<&TrustFacts> {
        self.published.get(cluster)?.facts.as_ref()
    }
}

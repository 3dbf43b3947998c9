//! The trust facts seen from the planner's side: the entry a connected cluster should publish (from its observed
//! `cacerts` and the roots its istiod serves), and one view per cluster of the mesh's trust for the rotation,
//! observed directly where connected, else as published.

use crate::facts::{CacertsFacts, CacertsState, Observed};
use crate::mesh::Mesh;
use crate::names::FORMAT_VERSION;
use crate::trust_facts::{Mark, TrustFacts};

/// A mark for `root` that keeps its earlier time when it already concerned that root.
fn mark(reached: bool, root: &str, previous: Option<&Mark>, now: i64) -> Option<Mark> {
    if !reached {
        return None;
    }
    let at = previous.filter(|m| m.root == root).map_or(now, |m| m.at);
    Some(Mark {
        root: root.to_string(),
        at,
    })
}

/// The entry a connected cluster should publish now, given what it published before.
pub fn desired_facts(
    state: Option<&CacertsState>,
    served: Option<&Vec<String>>,
    previous: Option<&TrustFacts>,
    newest: &str,
    now: i64,
) -> TrustFacts {
    let trusted_roots = state.map(|s| s.trusted_roots.clone()).unwrap_or_default();
    let signing_root = state.and_then(|s| s.issuer_fingerprint.clone());
    let serves = served.is_none_or(|s| s.iter().any(|fp| fp == newest));
    let trusts = trusted_roots.iter().any(|fp| fp == newest) && serves;
    let signs = signing_root.as_deref() == Some(newest);
    let settled = signs && trusted_roots == [newest] && served.is_none_or(|s| s == &[newest]);
    TrustFacts {
        trusts_since: mark(
            trusts,
            newest,
            previous.and_then(|p| p.trusts_since.as_ref()),
            now,
        ),
        signs_since: mark(
            signs,
            newest,
            previous.and_then(|p| p.signs_since.as_ref()),
            now,
        ),
        settled_since: mark(
            settled,
            newest,
            previous.and_then(|p| p.settled_since.as_ref()),
            now,
        ),
        trusted_roots,
        signing_root,
        served_roots: served.cloned(),
        format_version: FORMAT_VERSION,
        unknown: previous.map(|p| p.unknown.clone()).unwrap_or_default(),
    }
}

/// One cluster's trust as the rotation planner sees it: observed directly when connected, else as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustView {
    pub cluster: String,
    /// False when the cluster is neither connected nor published: nothing is known, so the rotation waits.
    pub known: bool,
    pub trusted_roots: Vec<String>,
    pub signing_root: Option<String>,
    pub served_roots: Option<Vec<String>>,
    /// Since when it signs with the newest root, if it does and that is known.
    pub signs_since: Option<i64>,
}

impl TrustView {
    pub fn from_state(cluster: &str, state: &CacertsState) -> TrustView {
        TrustView {
            cluster: cluster.to_string(),
            known: true,
            trusted_roots: state.trusted_roots.clone(),
            signing_root: state.issuer_fingerprint.clone(),
            served_roots: None,
            signs_since: None,
        }
    }
}

/// The mesh-wide trust: one view per cluster of the mesh file whose `cacerts` counts for the rotation.
/// A connected cluster without a managed `cacerts` is left out (it is issued from a root every cluster trusts).
pub fn mesh_views(mesh: &Mesh, observed: &Observed, newest: Option<&str>) -> Vec<TrustView> {
    let trust = &observed.trust;
    let mut views = Vec::new();
    for cluster in &mesh.clusters {
        let name = cluster.name.as_str();
        let published = trust.facts_of(name);
        if let Some(facts) = observed.clusters.get(name) {
            if let CacertsFacts::Managed(state) = &facts.cacerts {
                let mut view = TrustView::from_state(name, state);
                view.served_roots = trust.served.get(name).cloned().flatten();
                view.signs_since = direct_signs_since(state, published, newest);
                views.push(view);
            }
        } else if let Some(facts) = published {
            if facts.trusted_roots.is_empty() && facts.signing_root.is_none() {
                continue;
            }
            views.push(TrustView {
                cluster: name.to_string(),
                known: true,
                trusted_roots: facts.trusted_roots.clone(),
                signing_root: facts.signing_root.clone(),
                served_roots: facts.served_roots.clone(),
                signs_since: facts
                    .signs_since
                    .as_ref()
                    .filter(|m| Some(m.root.as_str()) == newest)
                    .map(|m| m.at),
            });
        } else if trust.read {
            views.push(TrustView {
                cluster: name.to_string(),
                known: false,
                trusted_roots: vec![],
                signing_root: None,
                served_roots: None,
                signs_since: None,
            });
        }
    }
    views
}

/// A connected cluster signing with the newest root: since its published mark when an agent publishes for it
/// (until the mark appears, one round after the write, the dwell has not started); else, for a cluster no
/// agent runs in (the admin publishes nothing), since its intermediate's notBefore.
fn direct_signs_since(
    state: &CacertsState,
    published: Option<&TrustFacts>,
    newest: Option<&str>,
) -> Option<i64> {
    let newest = newest?;
    if state.issuer_fingerprint.as_deref() != Some(newest) {
        return None;
    }
    match published {
        Some(p) => p
            .signs_since
            .as_ref()
            .filter(|m| m.root == newest)
            .map(|m| m.at),
        None => state.ca_cert.as_ref().map(|c| c.not_before),
    }
}

#[cfg(test)]
mod tests;

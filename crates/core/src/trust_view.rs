//! The trust facts seen from the planner's side: the entry a connected cluster should publish (from its observed
//! `cacerts` and the roots its istiod serves), and one view per cluster of the mesh's trust for the rotation,
//! observed directly where connected, else as published.

use crate::facts::{CacertsFacts, CacertsState, Observed};
use crate::mesh::Mesh;
use crate::names::FORMAT_VERSION;
use crate::trust_facts::{Mark, TrustFacts};

impl Observed {
    /// Whether a root rotation's trust facts matter: a second root exists, or a connected cluster trusts or
    /// signs with a root OpenBao does not hold (OpenBao restored from an older snapshot, or replaced).
    pub fn trust_facts_needed(&self) -> bool {
        self.openbao.roots.len() > 1 || self.connected_foreign_root()
    }

    /// Some connected cluster's managed `cacerts` trusts or is signed by a root OpenBao does not hold.
    pub fn connected_foreign_root(&self) -> bool {
        self.clusters.values().any(|c| match &c.cacerts {
            CacertsFacts::Managed(s) => s
                .trusted_roots
                .iter()
                .chain(s.issuer_fingerprint.as_ref())
                .any(|fp| self.openbao.root_by_fingerprint(fp).is_none()),
            _ => false,
        })
    }
}

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
            previous
                .and_then(|p| p.signs_since.as_ref())
                .filter(|m| m.at >= signing_intermediate_since(state)),
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
        published_at: Some(now),
        format_version: FORMAT_VERSION,
        unknown: previous.map(|p| p.unknown.clone()).unwrap_or_default(),
    }
}

/// The earliest time the current intermediate can have signed anything: its notBefore. A published
/// `signsSince` older than that was not continuously true: OpenBao restored from an older snapshot hands back
/// a mark from before the cluster moved away from that root and back, and keeping it would cut the dwell short.
/// (A renewal under the same root also restarts the mark: at worst the dwell runs once more.)
fn signing_intermediate_since(state: Option<&CacertsState>) -> i64 {
    state
        .and_then(|s| s.ca_cert.as_ref())
        .map_or(i64::MIN, |c| c.not_before)
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
    /// Its published entry predates a root some connected cluster trusts and OpenBao does not hold: OpenBao
    /// was restored from an older snapshot, and the entry is not believed until its agent writes it again.
    pub stale: bool,
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
            stale: false,
        }
    }
}

/// The mesh-wide trust: one view per cluster of the mesh file whose `cacerts` counts for the rotation.
/// A connected cluster without a managed `cacerts` is left out (it is issued from a root every cluster trusts).
pub fn mesh_views(mesh: &Mesh, observed: &Observed, newest: Option<&str>) -> Vec<TrustView> {
    let trust = &observed.trust;
    let foreign = connected_foreign_roots(observed);
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
            let stale = predates(facts, &foreign);
            views.push(TrustView {
                cluster: name.to_string(),
                known: !stale,
                trusted_roots: facts.trusted_roots.clone(),
                signing_root: facts.signing_root.clone(),
                served_roots: facts.served_roots.clone(),
                signs_since: facts
                    .signs_since
                    .as_ref()
                    .filter(|m| Some(m.root.as_str()) == newest)
                    .map(|m| m.at),
                stale,
            });
        } else if trust.read {
            views.push(TrustView {
                cluster: name.to_string(),
                known: false,
                trusted_roots: vec![],
                signing_root: None,
                served_roots: None,
                signs_since: None,
                stale: false,
            });
        }
    }
    views
}

/// The roots connected clusters trust that OpenBao does not hold, with their notBefore.
fn connected_foreign_roots(observed: &Observed) -> Vec<(&str, i64)> {
    let held = |fp: &str| observed.openbao.root_by_fingerprint(fp).is_some();
    observed
        .clusters
        .values()
        .filter_map(|c| match &c.cacerts {
            CacertsFacts::Managed(state) => Some(state),
            _ => None,
        })
        .flat_map(|s| {
            s.trusted_roots
                .iter()
                .zip(s.trusted_not_before.iter().copied())
                .filter(|(fp, _)| !held(fp))
                .map(|(fp, at)| (fp.as_str(), at))
        })
        .collect()
}

/// A published entry that mentions none of `foreign` and was written before one of them existed describes
/// the mesh before that root was made: OpenBao handed it back from an older snapshot. (Every cluster trusted
/// such a root once, in the rotation that introduced it; an entry written since knows it or knows better.)
fn predates(facts: &TrustFacts, foreign: &[(&str, i64)]) -> bool {
    if foreign.is_empty()
        || foreign
            .iter()
            .any(|(fp, _)| facts.trusted_roots.iter().any(|t| t == fp))
    {
        return false;
    }
    // OpenBao dates a root's notBefore back too: it was made that much later.
    let made = foreign
        .iter()
        .map(|(_, at)| at.saturating_add(SIGNING_BACKDATE))
        .max()
        .unwrap_or(i64::MIN);
    facts.published_at.is_none_or(|at| at < made)
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
            .filter(|m| m.root == newest && m.at >= signing_intermediate_since(Some(state)))
            .map(|m| m.at),
        None => state
            .ca_cert
            .as_ref()
            .map(|c| c.not_before.saturating_add(SIGNING_BACKDATE)),
    }
}

/// OpenBao and Vault date a certificate's notBefore back by 30 s (`not_before_duration`, for clock
/// skew): the intermediate began signing that much later, and a dwell counted from notBefore would be 30 s
/// short (a dwell under 30 s would be skipped).
const SIGNING_BACKDATE: i64 = 30;

#[cfg(test)]
mod tests;

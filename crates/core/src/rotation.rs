//! Root rotation, derived from what is observed so it survives crashes and needs no extra state.
//!
//! The newest `meshtrust-root-<n>` issuer is the target. While some cluster does not yet trust it, every
//! cluster's `root-cert.pem` gains it (phase 1, same intermediates). Once all trust it, intermediates are
//! re-issued from it (phase 2). Once all are signed by it, older roots leave `root-cert.pem` (phase 3).
//! Each phase is one `apply`, so no cluster ever stops trusting another.
//!
//! A root some cluster trusts but OpenBao does not hold (OpenBao restored from an older snapshot, or replaced by
//! an empty one) is treated like the old root of a rotation: every bundle that holds it keeps it, and it
//! leaves only after every cluster has signed with the newest root for the dwell. Nothing is signed by it
//! again (its key is gone), and an intermediate it signed moves to the newest root in phase 2.

use std::collections::{BTreeMap, BTreeSet};

use crate::facts::{CacertsState, RootIssuerFacts, root_issuer_name};
use crate::trust_view::TrustView;

/// Where the mesh stands in a root rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RotationPhase {
    /// Every managed bundle trusts only the newest root and is signed by it: nothing to rotate.
    Settled,
    /// Phase 1: some cluster does not trust the newest root yet (or its istiod does not serve it), so every
    /// `root-cert.pem` gains it.
    TrustNewRoot,
    /// Phase 2: every cluster trusts the newest root; intermediates are re-issued from it.
    MoveIntermediates,
    /// Between phases 2 and 3: every cluster signs with the newest root; the dwell lets workload certificates
    /// signed under the old root expire before any cluster stops trusting it.
    Dwell,
    /// Phase 3: every intermediate is signed by the newest root; older roots leave `root-cert.pem`.
    DropOldRoots,
}

/// How long every cluster must have signed with the newest root before older roots are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwellGate {
    pub now: i64,
    /// `None`: no dwell (the operator paces the phases, as `ca rotate-root` does).
    pub dwell: Option<u64>,
}

/// The rotation facts the CA planner acts on, computed once from the roots OpenBao holds and every cluster's
/// trust (observed directly, or as the cluster published it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationState {
    /// Generation of the newest root: the one every cluster converges on.
    pub newest: u32,
    /// The roots every `root-cert.pem` should hold now, ascending.
    pub trust: Vec<u32>,
    /// The root that signs a cluster's first intermediate: one every cluster already trusts.
    pub default_signing: u32,
    pub all_trust_newest: bool,
    pub all_signed_by_newest: bool,
    pub phase: RotationPhase,
    /// What the next phase waits for, one sentence each (empty when it waits for nothing).
    pub waiting: Vec<String>,
    /// Seconds of the dwell still to run, while in [`RotationPhase::Dwell`].
    pub dwell_left: Option<i64>,
    /// Fingerprints of roots some cluster trusts or signs with that OpenBao does not hold, ascending.
    pub foreign: Vec<String>,
    /// Whether bundles keep the foreign roots they hold: until every cluster has signed with the newest
    /// root for the dwell.
    pub keep_foreign: bool,
    /// Root certificate fingerprint -> generation, for the roots OpenBao holds.
    generations: BTreeMap<String, u32>,
}

impl RotationState {
    /// `newest` is the newest root's generation (1 when the first root is about to be generated); `states`
    /// are the managed bundles of the clusters in the mesh file. No dwell: for callers that see every cluster.
    pub fn new(newest: u32, roots: &[RootIssuerFacts], states: &[&CacertsState]) -> RotationState {
        let views: Vec<TrustView> = states
            .iter()
            .enumerate()
            .map(|(i, s)| TrustView::from_state(&format!("cluster {i}"), s))
            .collect();
        let gate = DwellGate {
            now: 0,
            dwell: None,
        };
        Self::mesh_wide(newest, roots, &views, gate)
    }

    /// The rotation judged on every cluster of the mesh: `views` from [`crate::trust_view::mesh_views`].
    pub fn mesh_wide(
        newest: u32,
        roots: &[RootIssuerFacts],
        views: &[TrustView],
        gate: DwellGate,
    ) -> RotationState {
        let mut generations = BTreeMap::new();
        for root in roots {
            // The first root with a fingerprint wins, as a lookup by fingerprint would find it.
            generations
                .entry(root.cert.fingerprint.clone())
                .or_insert(root.generation);
        }
        let mut state = RotationState {
            newest,
            trust: Vec::new(),
            default_signing: newest,
            all_trust_newest: true,
            all_signed_by_newest: true,
            phase: RotationPhase::Settled,
            waiting: Vec::new(),
            dwell_left: None,
            foreign: Vec::new(),
            keep_foreign: false,
            generations,
        };
        state.all_trust_newest = views.iter().all(|v| state.view_trusts_newest(v));
        state.all_signed_by_newest = views.iter().all(|v| state.view_signs_newest(v));
        let mut in_use: BTreeSet<u32> = BTreeSet::new();
        let mut foreign: BTreeSet<String> = BTreeSet::new();
        // Only a bundle whose roots hold its own issuer carries trust worth keeping; a damaged one is re-issued.
        for v in views.iter().filter(|v| coherent(v)) {
            foreign.extend(
                v.trusted_roots
                    .iter()
                    .chain(v.signing_root.as_ref())
                    .filter(|fp| state.generation_of(fp).is_none())
                    .cloned(),
            );
        }
        for v in views {
            in_use.extend(
                v.trusted_roots
                    .iter()
                    .filter_map(|fp| state.generation_of(fp)),
            );
            in_use.extend(
                v.signing_root
                    .as_deref()
                    .and_then(|fp| state.generation_of(fp)),
            );
        }
        let dwell_done = state.all_signed_by_newest && state.dwell_done(views, gate);
        state.foreign = foreign.into_iter().collect();
        state.keep_foreign = !dwell_done && !state.foreign.is_empty();
        state.trust = if dwell_done {
            vec![newest]
        } else {
            in_use
                .iter()
                .copied()
                .chain([newest])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        if !state.all_trust_newest {
            state.default_signing = in_use.iter().next().copied().unwrap_or(newest);
        }
        state.phase = state.phase_of(views, dwell_done);
        state.waiting = state.waits(views);
        state
    }

    fn view_trusts_newest(&self, v: &TrustView) -> bool {
        let holds = |roots: &[String]| {
            roots
                .iter()
                .any(|fp| self.generation_of(fp) == Some(self.newest))
        };
        v.known && holds(&v.trusted_roots) && v.served_roots.as_deref().is_none_or(holds)
    }

    fn view_signs_newest(&self, v: &TrustView) -> bool {
        v.known
            && v.signing_root
                .as_deref()
                .and_then(|fp| self.generation_of(fp))
                == Some(self.newest)
    }

    fn view_settled(&self, v: &TrustView) -> bool {
        let only = |roots: &[String]| {
            roots.len() == 1 && self.generation_of(&roots[0]) == Some(self.newest)
        };
        only(&v.trusted_roots) && v.served_roots.as_deref().is_none_or(only)
    }

    /// True when every cluster has signed with the newest root for the whole dwell; sets `dwell_left`.
    fn dwell_done(&mut self, views: &[TrustView], gate: DwellGate) -> bool {
        let Some(dwell) = gate.dwell else {
            return true;
        };
        if views.iter().all(|v| self.view_settled(v)) {
            return true;
        }
        // The dwell starts when the last cluster began signing with the newest root.
        let Some(start) = views
            .iter()
            .map(|v| v.signs_since)
            .collect::<Option<Vec<i64>>>()
        else {
            return false;
        };
        let start = start.into_iter().max().unwrap_or(gate.now);
        let left = start.saturating_add(dwell as i64) - gate.now;
        if left > 0 {
            self.dwell_left = Some(left);
        }
        left <= 0
    }

    fn phase_of(&self, views: &[TrustView], dwell_done: bool) -> RotationPhase {
        if !self.all_trust_newest {
            RotationPhase::TrustNewRoot
        } else if !self.all_signed_by_newest {
            RotationPhase::MoveIntermediates
        } else if views.iter().all(|v| self.view_settled(v)) {
            RotationPhase::Settled
        } else if !dwell_done {
            RotationPhase::Dwell
        } else {
            RotationPhase::DropOldRoots
        }
    }

    /// One sentence per cluster the next phase waits for.
    fn waits(&self, views: &[TrustView]) -> Vec<String> {
        let newest = root_issuer_name(self.newest);
        let mut out = Vec::new();
        for v in views {
            let c = &v.cluster;
            if v.stale {
                out.push(format!(
                    "{c}'s published trust facts predate a root the clusters trust but OpenBao does not hold (OpenBao restored from an older snapshot?); waiting for its agent to publish them again"
                ));
            } else if !v.known {
                out.push(format!(
                    "{c} has published no trust facts (is its agent running?)"
                ));
            } else if !self.all_trust_newest && !self.view_trusts_newest(v) {
                out.push(if v.trusted_roots.iter().any(|fp| self.generation_of(fp) == Some(self.newest)) {
                    format!("{c}: istiod does not serve {newest} in ConfigMap istio-ca-root-cert although cacerts trusts it (istiod did not accept the new root-cert.pem: set ISTIO_MULTIROOT_MESH=true or restart istiod)")
                } else {
                    format!("{c} does not trust {newest} yet")
                });
            } else if self.all_trust_newest && !self.view_signs_newest(v) {
                out.push(format!("{c} does not sign with {newest} yet"));
            }
        }
        if let Some(left) = self.dwell_left {
            out.push(format!(
                "the dwell: every cluster signs with {newest}; older roots are dropped in {}",
                crate::duration::humanize(left)
            ));
        }
        out
    }

    pub fn generation_of(&self, fingerprint: &str) -> Option<u32> {
        self.generations.get(fingerprint).copied()
    }

    /// The generations of the roots in a bundle's `root-cert.pem`, in file order; `None` for a root OpenBao
    /// does not hold.
    pub fn trusted_generations(&self, state: &CacertsState) -> Vec<Option<u32>> {
        state
            .trusted_roots
            .iter()
            .map(|fp| self.generation_of(fp))
            .collect()
    }

    /// The generation of the root that signed a bundle's intermediate, if OpenBao holds it.
    pub fn issuer_generation(&self, state: &CacertsState) -> Option<u32> {
        state
            .issuer_fingerprint
            .as_deref()
            .and_then(|fp| self.generation_of(fp))
    }

    /// More than one root is trusted: istiod must accept a changing `root-cert.pem`.
    pub fn rotating(&self) -> bool {
        self.trust.len() > 1 || self.keep_foreign
    }

    /// The foreign roots (held by no OpenBao issuer) a bundle keeps now: those in its own `root-cert.pem`,
    /// while the dwell has not passed. Their certificates come from the bundle itself.
    pub fn kept_foreign(&self, state: &CacertsState) -> Vec<String> {
        if !self.keep_foreign
            || !state
                .issuer_fingerprint
                .as_ref()
                .is_some_and(|i| state.trusted_roots.contains(i))
        {
            return Vec::new();
        }
        state
            .trusted_roots
            .iter()
            .filter(|fp| self.generation_of(fp).is_none())
            .cloned()
            .collect()
    }

    /// The root that signs a replacement for an intermediate now signed by `current`.
    pub fn reissue_signing(&self, current: Option<u32>) -> u32 {
        if self.all_trust_newest {
            self.newest
        } else {
            current.unwrap_or(self.default_signing)
        }
    }

    /// True when an intermediate signed by `current` (`None`: a root OpenBao does not hold) must move to the
    /// newest root (phase 2).
    pub fn moves_intermediate(&self, current: Option<u32>) -> bool {
        self.all_trust_newest && current != Some(self.newest)
    }

    /// The `root-cert.pem` for an intermediate signed by `signing`: the mesh's trust plus its own root.
    pub fn trust_with(&self, signing: u32) -> Vec<u32> {
        let mut trust = self.trust.clone();
        if !trust.contains(&signing) {
            trust.push(signing);
            trust.sort_unstable();
        }
        trust
    }

    /// Why a bundle's `root-cert.pem` must change while its intermediate stays, if it must.
    pub fn bundle_update_reason(&self, state: &CacertsState) -> Option<String> {
        let drops_foreign = !self.keep_foreign && self.trusted_generations(state).contains(&None);
        if self.trusts_exactly(state, &self.trust) && !drops_foreign {
            return None;
        }
        Some(
            if !self.trusted_generations(state).contains(&Some(self.newest)) {
                format!(
                    "root rotation phase 1: every cluster must trust {} before any intermediate moves to it",
                    root_issuer_name(self.newest)
                )
            } else if self.all_signed_by_newest && drops_foreign {
                format!(
                    "root rotation phase 3: every cluster now signs with {}; older roots, also those OpenBao does not hold, are dropped",
                    root_issuer_name(self.newest)
                )
            } else if self.all_signed_by_newest {
                format!(
                    "root rotation phase 3: every cluster now signs with {}; older roots are dropped",
                    root_issuer_name(self.newest)
                )
            } else {
                "root-cert.pem differs from the roots the mesh trusts".into()
            },
        )
    }

    /// The roots OpenBao holds in the bundle are exactly `trust` (in any order: the applier keeps the file's
    /// order, which istiod 1.20-1.30 needs to see the old bytes inside the new file).
    fn trusts_exactly(&self, state: &CacertsState, trust: &[u32]) -> bool {
        let mut held: Vec<u32> = self
            .trusted_generations(state)
            .into_iter()
            .flatten()
            .collect();
        held.sort_unstable();
        held == trust
    }
}

/// The bundle's roots hold the root that signed its intermediate: the trust it states is in use.
fn coherent(v: &TrustView) -> bool {
    v.signing_root
        .as_ref()
        .is_some_and(|s| v.trusted_roots.contains(s))
}

#[cfg(test)]
mod tests;

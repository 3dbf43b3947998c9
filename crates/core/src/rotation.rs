//! Root rotation, derived from what is observed so it survives crashes and needs no extra state.
//!
//! The newest `meshtrust-root-<n>` issuer is the target. While some cluster does not yet trust it, every
//! cluster's `root-cert.pem` gains it (phase 1, same intermediates). Once all trust it, intermediates are
//! re-issued from it (phase 2). Once all are signed by it, older roots leave `root-cert.pem` (phase 3).
//! Each phase is one `apply`, so no cluster ever stops trusting another.

use std::collections::{BTreeMap, BTreeSet};

use crate::facts::{CacertsState, RootIssuerFacts, root_issuer_name};

/// Where the mesh stands in a root rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationPhase {
    /// Every managed bundle trusts only the newest root and is signed by it: nothing to rotate.
    Settled,
    /// Phase 1: some cluster does not trust the newest root yet, so every `root-cert.pem` gains it.
    TrustNewRoot,
    /// Phase 2: every cluster trusts the newest root; intermediates are re-issued from it.
    MoveIntermediates,
    /// Phase 3: every intermediate is signed by the newest root; older roots leave `root-cert.pem`.
    DropOldRoots,
}

/// The rotation facts the CA planner acts on, computed once from the roots OpenBao holds and the managed
/// `cacerts` bundles that were observed.
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
    /// Root certificate fingerprint -> generation, for the roots OpenBao holds.
    generations: BTreeMap<String, u32>,
}

impl RotationState {
    /// `newest` is the newest root's generation (1 when the first root is about to be generated); `states`
    /// are the managed bundles of the clusters in the mesh file.
    pub fn new(newest: u32, roots: &[RootIssuerFacts], states: &[&CacertsState]) -> RotationState {
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
            generations,
        };
        state.all_trust_newest = states
            .iter()
            .all(|s| state.trusted_generations(s).contains(&Some(newest)));
        state.all_signed_by_newest = states
            .iter()
            .all(|s| state.issuer_generation(s) == Some(newest));
        let mut in_use: BTreeSet<u32> = BTreeSet::new();
        for s in states {
            in_use.extend(state.trusted_generations(s).into_iter().flatten());
            in_use.extend(state.issuer_generation(s));
        }
        state.trust = if state.all_signed_by_newest {
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
        state.phase = state.phase_of(states);
        state
    }

    fn phase_of(&self, states: &[&CacertsState]) -> RotationPhase {
        if !self.all_trust_newest {
            RotationPhase::TrustNewRoot
        } else if !self.all_signed_by_newest {
            RotationPhase::MoveIntermediates
        } else if states.iter().any(|s| !self.trusts_exactly(s, &self.trust)) {
            RotationPhase::DropOldRoots
        } else {
            RotationPhase::Settled
        }
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
        self.trust.len() > 1
    }

    /// The root that signs a replacement for an intermediate now signed by `current`.
    pub fn reissue_signing(&self, current: Option<u32>) -> u32 {
        if self.all_trust_newest {
            self.newest
        } else {
            current.unwrap_or(self.default_signing)
        }
    }

    /// True when an intermediate signed by `current` must move to the newest root (phase 2).
    pub fn moves_intermediate(&self, current: u32) -> bool {
        self.all_trust_newest && current != self.newest
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
        if self.trusts_exactly(state, &self.trust) {
            return None;
        }
        Some(
            if !self.trusted_generations(state).contains(&Some(self.newest)) {
                format!(
                    "root rotation phase 1: every cluster must trust {} before any intermediate moves to it",
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

    fn trusts_exactly(&self, state: &CacertsState, trust: &[u32]) -> bool {
        self.trusted_generations(state) == trust.iter().map(|g| Some(*g)).collect::<Vec<_>>()
    }
}

#[cfg(test)]
mod tests;

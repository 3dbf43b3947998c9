use super::*;
use crate::facts::CertFacts;
use crate::mesh::SecretFormat;

fn cert(fingerprint: &str) -> CertFacts {
    CertFacts {
        serial: fingerprint.into(),
        fingerprint: fingerprint.into(),
        subject_cn: "ca".into(),
        not_before: 0,
        not_after: 1,
        key: None,
        is_ca: true,
    }
}

fn roots(generations: &[u32]) -> Vec<RootIssuerFacts> {
    generations
        .iter()
        .map(|&generation| RootIssuerFacts {
            generation,
            issuer_id: format!("id-{generation}"),
            cert: cert(&format!("root-{generation}")),
            key_internal: true,
        })
        .collect()
}

/// A bundle signed by root `signed_by` whose `root-cert.pem` holds `trust` (0: a root OpenBao does not hold).
fn bundle(signed_by: u32, trust: &[u32]) -> CacertsState {
    CacertsState {
        format: SecretFormat::Istio,
        ca_cert: Some(cert("intermediate")),
        issuer_fingerprint: Some(format!("root-{signed_by}")),
        trusted_roots: trust.iter().map(|g| format!("root-{g}")).collect(),
        trusted_not_before: vec![],
        problems: vec![],
    }
}

fn state(newest: u32, held: &[u32], bundles: &[CacertsState]) -> RotationState {
    let refs: Vec<&CacertsState> = bundles.iter().collect();
    RotationState::new(newest, &roots(held), &refs)
}

#[test]
fn no_bundles_is_settled_on_the_newest_root() {
    let s = state(1, &[], &[]);
    assert_eq!(s.phase, RotationPhase::Settled);
    assert_eq!(s.trust, [1]);
    assert_eq!(s.default_signing, 1);
    assert!(!s.rotating());
}

#[test]
fn one_root_everywhere_is_settled() {
    let bundles = [bundle(1, &[1]), bundle(1, &[1])];
    let s = state(1, &[1], &bundles);
    assert_eq!(s.phase, RotationPhase::Settled);
    assert_eq!(s.trust, [1]);
    assert!(bundles.iter().all(|b| s.bundle_update_reason(b).is_none()));
    assert!(!s.moves_intermediate(Some(1)));
}

#[test]
fn a_new_root_starts_phase_one_and_keeps_signing_with_the_old() {
    let bundles = [bundle(1, &[1]), bundle(1, &[1])];
    let s = state(2, &[1, 2], &bundles);
    assert_eq!(s.phase, RotationPhase::TrustNewRoot);
    assert_eq!(s.trust, [1, 2]);
    assert!(s.rotating());
    assert_eq!(s.default_signing, 1);
    assert_eq!(s.reissue_signing(Some(1)), 1);
    assert!(!s.moves_intermediate(Some(1)));
    let reason = s.bundle_update_reason(&bundles[0]).expect("must change");
    assert!(
        reason.contains("phase 1") && reason.contains("meshtrust-root-2"),
        "{reason}"
    );
}

#[test]
fn one_cluster_behind_keeps_phase_one_for_all() {
    let bundles = [bundle(1, &[1, 2]), bundle(1, &[1])];
    let s = state(2, &[1, 2], &bundles);
    assert_eq!(s.phase, RotationPhase::TrustNewRoot);
    assert!(s.bundle_update_reason(&bundles[0]).is_none());
    assert!(s.bundle_update_reason(&bundles[1]).is_some());
}

#[test]
fn all_trusting_the_new_root_moves_intermediates() {
    let bundles = [bundle(1, &[1, 2]), bundle(2, &[1, 2])];
    let s = state(2, &[1, 2], &bundles);
    assert_eq!(s.phase, RotationPhase::MoveIntermediates);
    assert_eq!(s.trust, [1, 2]);
    assert!(s.moves_intermediate(Some(1)));
    assert!(!s.moves_intermediate(Some(2)));
    assert_eq!(s.reissue_signing(Some(1)), 2);
    assert_eq!(s.default_signing, 2);
}

#[test]
fn all_signed_by_the_new_root_drops_old_roots() {
    let bundles = [bundle(2, &[1, 2]), bundle(2, &[2])];
    let s = state(2, &[1, 2], &bundles);
    assert_eq!(s.phase, RotationPhase::DropOldRoots);
    assert_eq!(s.trust, [2]);
    assert!(!s.rotating());
    let reason = s.bundle_update_reason(&bundles[0]).expect("must change");
    assert!(reason.contains("phase 3"), "{reason}");
    assert!(s.bundle_update_reason(&bundles[1]).is_none());
}

#[test]
fn a_root_openbao_no_longer_holds_is_not_trusted_on() {
    // Root 0 is unknown: it counts as not trusting the newest and is left out of the trust set.
    let bundles = [bundle(0, &[0])];
    let s = state(1, &[1], &bundles);
    assert_eq!(s.phase, RotationPhase::TrustNewRoot);
    assert_eq!(s.trusted_generations(&bundles[0]), [None]);
    assert_eq!(s.issuer_generation(&bundles[0]), None);
    assert_eq!(s.trust, [1]);
    assert_eq!(s.default_signing, 1);
    assert_eq!(s.reissue_signing(None), 1);
}

#[test]
fn an_intermediate_from_an_untrusted_root_adds_its_root_to_its_own_bundle() {
    let bundles = [bundle(1, &[1]), bundle(1, &[1])];
    let s = state(3, &[1, 3], &bundles);
    assert_eq!(s.trust, [1, 3]);
    assert_eq!(s.trust_with(2), [1, 2, 3]);
    assert_eq!(s.trust_with(1), [1, 3]);
}

#[test]
fn trust_order_in_the_file_is_kept() {
    // The applier keeps the file's order (istiod 1.20-1.30 looks for the old bytes inside the new file), so
    // the same roots in another order are no reason to rewrite it.
    let bundles = [bundle(1, &[2, 1])];
    let s = state(2, &[1, 2], &bundles);
    assert_eq!(s.phase, RotationPhase::MoveIntermediates);
    assert_eq!(s.bundle_update_reason(&bundles[0]), None);
    // A duplicate is a difference.
    let twice = [bundle(1, &[1, 1, 2])];
    assert!(s.bundle_update_reason(&twice[0]).is_some());
}

#[test]
fn a_root_set_neither_subset_nor_superset_asks_for_an_istiod_restart() {
    use crate::rotation_plan::disjoint_roots_warning;
    // The phased steps: [1] -> [1, 2] (superset), [1, 2] -> [2] (subset): istiod reloads both.
    assert_eq!(
        disjoint_roots_warning("c1", "istio-system", &[Some(1)], &[1, 2], false),
        None
    );
    assert_eq!(
        disjoint_roots_warning("c1", "istio-system", &[Some(1), Some(2)], &[2], false),
        None
    );
    // A bundle trusting a root OpenBao does not hold, replaced by the mesh's: disjoint.
    let warning =
        disjoint_roots_warning("c1", "istio-system", &[None], &[2], false).expect("warning");
    assert!(
        warning.contains("restart istiod") && warning.contains("c1"),
        "{warning}"
    );
    assert!(disjoint_roots_warning("c1", "istio-system", &[Some(1)], &[2], false).is_some());
}

#[test]
fn the_dwell_holds_the_old_root_until_every_cluster_signed_long_enough() {
    use crate::trust_view::TrustView;
    let view = |c: &str, b: &CacertsState, since: Option<i64>| {
        let mut v = TrustView::from_state(c, b);
        v.signs_since = since;
        v
    };
    let (a, b) = (bundle(2, &[1, 2]), bundle(2, &[1, 2]));
    let gate = |now| DwellGate {
        now,
        dwell: Some(100),
    };
    let views = [view("a", &a, Some(10)), view("b", &b, Some(50))];
    let s = RotationState::mesh_wide(2, &roots(&[1, 2]), &views, gate(149));
    assert_eq!(s.phase, RotationPhase::Dwell);
    assert_eq!(s.trust, [1, 2]);
    assert_eq!(s.dwell_left, Some(1));
    assert!(
        s.waiting.iter().any(|w| w.contains("the dwell")),
        "{:?}",
        s.waiting
    );
    let s = RotationState::mesh_wide(2, &roots(&[1, 2]), &views, gate(150));
    assert_eq!(s.phase, RotationPhase::DropOldRoots);
    assert_eq!(s.trust, [2]);
    // A cluster nothing is known about holds every phase.
    let mut unknown = view("c", &b, None);
    unknown.known = false;
    let s = RotationState::mesh_wide(2, &roots(&[1, 2]), &[views[0].clone(), unknown], gate(1000));
    assert_eq!(s.phase, RotationPhase::TrustNewRoot);
    assert!(
        s.waiting
            .iter()
            .any(|w| w.contains("c has published no trust facts")),
        "{:?}",
        s.waiting
    );
}

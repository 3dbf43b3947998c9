//! Renewal and root rotation: time moves forward on every clock, and at no instant does one cluster stop trusting
//! the root that signed another's intermediate.

use std::sync::{Arc, Mutex};

use meshtrust_core::plan::Action;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::ErrorKind;
use meshtrust_engine::{EngineError, RotationStart};

use crate::support::*;

/// The root issuers OpenBao holds, oldest first.
fn root_issuers(h: &Harness) -> Vec<String> {
    h.bao.with_state(|s| s.issuer_names("pki"))
}

#[tokio::test]
async fn renewal_near_expiry_reissues_and_keeps_the_same_root() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let root_before = h.trust("c1").trusted_roots;
    let serials = (serial(&h, "c1"), serial(&h, "c2"));
    h.advance(8041 * HOUR); // 719h left of 8760h: inside renewBefore 720h
    let (plan, _, _) = h.converge().await.expect("renews");
    let reissued: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match &c.action {
            Action::IssueIntermediate {
                cluster,
                signing: 1,
                trust,
                ..
            } if trust == &[1] => Some(cluster.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reissued, ["c1", "c2"]);
    let cacerts_writes: Vec<String> = h
        .writes()
        .into_iter()
        .filter(|w| {
            w.contains("cacerts") || w.contains("sign_intermediate") || w.contains("generate_root")
        })
        .collect();
    assert_eq!(
        cacerts_writes,
        lines(&[
            "openbao: sign_intermediate pki meshtrust-root-1 cn=c1 intermediate CA (test-mesh)",
            "openbao: sign_intermediate pki meshtrust-root-1 cn=c2 intermediate CA (test-mesh)",
            "c1: replace_secret istio-system/cacerts",
            "c2: replace_secret istio-system/cacerts",
        ])
    );
    assert_eq!(h.trust("c1").trusted_roots, root_before, "same root bytes");
    assert_eq!(root_issuers(&h), vec!["meshtrust-root-1".to_string()]);
    assert_ne!((serial(&h, "c1"), serial(&h, "c2")), serials);
    let expiry = h.trust("c1").ca_cert.expect("cert").not_after;
    assert!(expiry > h.now() + 8000 * HOUR, "a full new lifetime");
    h.assert_verified().await;
}

#[tokio::test]
async fn an_expired_intermediate_is_reissued() {
    let h = Harness::settled(&["c1"]).await;
    h.advance(9000 * HOUR); // past the 8760h lifetime
    assert!(h.trust("c1").ca_cert.expect("cert").not_after < h.now());
    h.converge().await.expect("renews");
    let c1: Vec<String> = h
        .cluster("c1")
        .calls()
        .writes()
        .into_iter()
        .filter(|w| w.contains("cacerts"))
        .collect();
    assert_eq!(c1, lines(&["replace_secret istio-system/cacerts"]));
    h.assert_verified().await;
}

#[tokio::test]
async fn nothing_is_reissued_before_the_renewal_window() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.advance(8039 * HOUR); // 721h left: just outside renewBefore
    h.converge().await.expect("converges");
    assert!(
        !h.writes()
            .iter()
            .any(|w| w.contains("cacerts") || w.contains("sign_intermediate")),
        "{:?}",
        h.writes()
    );
}

#[tokio::test]
async fn root_rotation_across_three_clusters_never_opens_a_trust_gap() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    let started = engine.start_root_rotation(&snapshot).await.expect("start");
    assert_eq!(
        started,
        RotationStart::Generated {
            issuer_name: "meshtrust-root-2".into()
        }
    );
    h.assert_no_trust_gap();

    let mut rounds: Vec<Vec<String>> = Vec::new();
    loop {
        // After every single write, not only after every round.
        let checks = Arc::new(Mutex::new(0));
        let counted = checks.clone();
        let mut progress = |_: &meshtrust_core::plan::Change,
                            _: &meshtrust_engine::AppliedChange| {
            h.assert_no_trust_gap();
            *counted.lock().expect("lock") += 1;
        };
        // As `ca rotate-root` runs it: the operator paces the phases, so no dwell.
        let options = PlanOptions {
            skip_dwell: true,
            ..Default::default()
        };
        let (plan, _, _) = h
            .converge_with(&engine, options, &mut progress)
            .await
            .expect("a rotation round");
        if plan.is_empty() {
            break;
        }
        h.assert_no_trust_gap();
        assert_eq!(*checks.lock().expect("lock"), plan.changes.len());
        rounds.push(plan.changes.iter().map(|c| describe(&c.action)).collect());
        assert!(rounds.len() <= 3, "rotation takes three rounds: {rounds:?}");
    }
    assert_eq!(
        rounds,
        vec![
            // The start already rewrote the policies to name the new root, before anything signs with it.
            vec!["trust c1 [1, 2]", "trust c2 [1, 2]", "trust c3 [1, 2]"],
            vec![
                "issue c1 by 2 trust [1, 2]",
                "issue c2 by 2 trust [1, 2]",
                "issue c3 by 2 trust [1, 2]"
            ],
            vec!["trust c1 [2]", "trust c2 [2]", "trust c3 [2]"],
        ]
    );
    let snapshot = h.assert_verified().await;
    assert_eq!(
        snapshot.facts().openbao.newest_root().map(|r| r.generation),
        Some(2)
    );
    assert!(
        h.bao.with_state(|s| s.policies["meshtrust-agent-c1"]
            .contains("pki/issuer/meshtrust-root-2/sign-intermediate")),
        "the agents may sign with the new root"
    );
    h.clear_calls();
    h.converge().await.expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

/// A plan's CA changes in a short form for comparing rounds.
fn describe(action: &Action) -> String {
    match action {
        Action::UpdateTrustBundle { cluster, trust, .. } => format!("trust {cluster} {trust:?}"),
        Action::IssueIntermediate {
            cluster,
            signing,
            trust,
            ..
        } => format!("issue {cluster} by {signing} trust {trust:?}"),
        Action::WritePolicy { name } => format!("policy {name}"),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn a_rotation_interrupted_mid_phase_resumes_without_a_trust_gap() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    h.converge().await.expect("phase 1");
    // Phase 2 breaks after c1 moved to the new root.
    h.bao.fail(
        "sign_intermediate pki meshtrust-root-2 cn=c2",
        1,
        ErrorKind::Unavailable,
    );
    let e = h.converge().await.expect_err("phase 2 breaks");
    assert_eq!(port_kind(&e), Some(ErrorKind::Unavailable));
    h.assert_no_trust_gap();
    for _ in 0..3 {
        // `apply` keeps the dwell: a day passes between rounds.
        h.advance(25 * HOUR);
        h.converge().await.expect("resumes");
        h.assert_no_trust_gap();
    }
    h.assert_verified().await;
}

#[tokio::test]
async fn rotation_needs_a_root_first() {
    let h = Harness::fresh(&["c1"]);
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    let e = engine
        .start_root_rotation(&snapshot)
        .await
        .expect_err("no root yet");
    assert!(matches!(e, EngineError::Inconsistent(_)), "{e}");
    assert!(e.to_string().contains("meshtrust apply"), "{e}");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_shared_root_cannot_be_rotated() {
    let h = Harness::settled_mesh(&MeshBuilder::new(&["c1", "c2"]).shared_root()).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    let e = engine
        .start_root_rotation(&snapshot)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("bao-pki"), "{e}");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_cacerts_lost_mid_rotation_is_reissued_without_a_trust_gap() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    h.converge().await.expect("phase 1");
    h.cluster("c2").with_state(|s| {
        s.secrets
            .remove(&(ISTIO_NS.to_string(), "cacerts".to_string()));
    });
    for _ in 0..4 {
        h.advance(25 * HOUR);
        h.converge().await.expect("a round");
        h.assert_no_trust_gap();
    }
    h.assert_verified().await;
}

#[tokio::test]
async fn agents_alone_carry_a_rotation_without_a_trust_gap() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    // Agents each see only their own cluster and their peers' published trust facts; they take turns, c1's
    // first, half a day apart (the dwell is 24h).
    for _ in 0..8 {
        h.advance(12 * HOUR);
        h.agent_rounds(&["c1", "c2"]).await;
    }
    // Peers' remote secrets follow the reader tokens republished in the last round.
    h.agent_rounds(&["c1", "c2"]).await;
    h.assert_verified().await;
}

/// An agent observes only its own cluster; "every cluster trusts the newest root" is judged on its peers'
/// published trust facts, so a fast agent waits for a slow peer.
#[tokio::test]
async fn a_fast_agent_does_not_move_to_the_new_root_before_its_peers_trust_it() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    // c1's agent polls twice before c2's agent runs once.
    for cluster in ["c1", "c1"] {
        h.converge_with(&h.agent(cluster), PlanOptions::default(), &mut |_, _| {})
            .await
            .expect("an agent round");
    }
    h.assert_no_trust_gap();
}

/// Starts a rotation on a settled mesh of `clusters` (root 2 exists; nothing moved yet).
async fn started(clusters: &[&str]) -> Harness {
    let h = Harness::settled(clusters).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    h
}

#[tokio::test]
async fn a_stopped_agent_makes_the_others_wait() {
    let h = started(&["c1", "c2", "c3"]).await;
    // c3's agent is stopped: its cluster never publishes. The others add the new root, and go no further.
    for _ in 0..6 {
        h.agent_rounds(&["c1", "c2"]).await;
        h.advance(12 * HOUR);
    }
    for cluster in ["c1", "c2"] {
        assert_eq!(
            h.generations(cluster),
            (vec![1, 2], 1),
            "{cluster} waits in phase 1"
        );
    }
    let (plan, _) = h
        .agent("c1")
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    assert!(
        !plan.changes.iter().any(|c| matches!(
            c.action,
            Action::IssueIntermediate { .. } | Action::UpdateTrustBundle { .. }
        )),
        "{plan}"
    );
    // c3's agent comes back: the mesh carries on and settles on the new root.
    for _ in 0..8 {
        h.advance(12 * HOUR);
        h.agent_rounds(&["c1", "c2", "c3"]).await;
    }
    h.agent_rounds(&["c1", "c2", "c3"]).await;
    h.assert_verified().await;
}

#[tokio::test]
async fn the_old_root_stays_until_the_dwell_has_passed() {
    let h = started(&["c1", "c2"]).await;
    // Rounds an hour apart until every cluster signs with the new root.
    let mut rounds = 0;
    while [h.generations("c1").1, h.generations("c2").1] != [2, 2] {
        h.agent_rounds(&["c1", "c2"]).await;
        h.advance(HOUR);
        rounds += 1;
        assert!(rounds < 10, "phase 2 is reached");
    }
    let all_signing = h.now() - HOUR;
    // Then the old root stays trusted for the whole dwell (24h), and goes soon after.
    let dropped_at = loop {
        h.agent_rounds(&["c1", "c2"]).await;
        if h.generations("c1").0 == [2] || h.generations("c2").0 == [2] {
            break h.now();
        }
        h.advance(HOUR);
        assert!(
            h.now() - all_signing < 30 * HOUR,
            "the old root is dropped after the dwell"
        );
    };
    assert!(
        dropped_at - all_signing >= 23 * HOUR,
        "dropped {}h after every cluster signed with the new root",
        (dropped_at - all_signing) / HOUR
    );
    h.agent_rounds(&["c1", "c2"]).await;
    h.assert_verified().await;
}

#[tokio::test]
async fn an_istiod_that_does_not_serve_the_new_root_blocks_phase_2() {
    let h = started(&["c1", "c2"]).await;
    h.istiod_serves_cacerts("c1");
    h.istiod_serves_cacerts("c2");
    for _ in 0..2 {
        h.agent_rounds(&["c1", "c2"]).await;
        // c1's istiod takes every new bundle; c2's keeps serving the old root (no ISTIO_MULTIROOT_MESH).
        h.istiod_serves_cacerts("c1");
    }
    for _ in 0..4 {
        h.agent_rounds(&["c1", "c2"]).await;
        h.istiod_serves_cacerts("c1");
        h.advance(12 * HOUR);
    }
    for cluster in ["c1", "c2"] {
        assert_eq!(
            h.generations(cluster),
            (vec![1, 2], 1),
            "{cluster} waits in phase 1"
        );
    }
    let (plan, _) = h
        .agent("c2")
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("istiod does not serve"))
        .unwrap_or_else(|| panic!("a warning about c2's istiod: {:?}", plan.warnings));
    assert!(
        warning.contains("c2") && warning.contains("ISTIO_MULTIROOT_MESH=true"),
        "{warning}"
    );
    let (plan, _) = h
        .agent("c1")
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("c2: istiod does not serve")),
        "{:?}",
        plan.warnings
    );
    // c2's istiod is restarted and serves the new bundle: the rotation goes on to the end.
    for _ in 0..8 {
        h.advance(12 * HOUR);
        h.istiod_serves_cacerts("c2");
        h.agent_rounds(&["c1", "c2"]).await;
        h.istiod_serves_cacerts("c1");
    }
    h.istiod_serves_cacerts("c2");
    h.agent_rounds(&["c1", "c2"]).await;
    h.assert_verified().await;
}

#[tokio::test]
async fn the_multi_root_warning_comes_with_phase_1() {
    let h = started(&["c1", "c2"]).await;
    let (plan, _) = h
        .engine()
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    assert!(
        plan.changes
            .iter()
            .all(|c| matches!(c.action, Action::UpdateTrustBundle { .. })),
        "{plan}"
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("ISTIO_MULTIROOT_MESH=true")),
        "{:?}",
        plan.warnings
    );
}

#[tokio::test]
async fn the_new_root_names_its_generation() {
    let h = started(&["c1"]).await;
    let snapshot = h.engine().observe(h.now()).await.expect("observe");
    let cns: Vec<&str> = snapshot
        .facts()
        .openbao
        .roots
        .iter()
        .map(|r| r.cert.subject_cn.as_str())
        .collect();
    assert_eq!(
        cns,
        [
            "meshtrust root CA (test-mesh)",
            "meshtrust root CA (test-mesh) G2"
        ]
    );
}

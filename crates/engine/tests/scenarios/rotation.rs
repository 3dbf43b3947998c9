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
        let (plan, _, _) = h
            .converge_with(&engine, PlanOptions::default(), &mut progress)
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
            // The new root appears: the policies name it before anything signs with it.
            vec![
                "policy meshtrust-agent-c1",
                "policy meshtrust-agent-c2",
                "policy meshtrust-agent-c3",
                "policy meshtrust-admin",
                "trust c1 [1, 2]",
                "trust c2 [1, 2]",
                "trust c3 [1, 2]"
            ],
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
        Action::UpdateTrustBundle { cluster, trust } => format!("trust {cluster} {trust:?}"),
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
    // Agents each see only their own cluster; they take turns, c1's first. (Safe only because of the turns: see
    // the ignored test below.)
    for _ in 0..4 {
        for cluster in ["c1", "c2"] {
            h.converge_with(&h.agent(cluster), PlanOptions::default(), &mut |_, _| {})
                .await
                .expect("an agent round");
            h.assert_no_trust_gap();
        }
    }
    h.assert_verified().await;
}

/// An agent observes only its own cluster, so the planner's "every cluster trusts the newest root" is judged on
/// that cluster alone: its second round re-issues from the new root while the peer still trusts only the old one.
#[tokio::test]
#[ignore = "bug: an agent decides rotation phase 2 from its own cluster only; a fast agent signs with the new root before its peers trust it (trust gap)"]
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

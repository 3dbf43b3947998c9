//! A call that fails halfway: the run stops with the port's error, nothing half-written is left behind, and the
//! next run completes. Objects meshtrust does not own block the plan before anything is written.

use meshtrust_core::plan::Target;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::{ErrorKind, System};
use meshtrust_engine::{EngineError, Scope};

use crate::support::*;

#[tokio::test]
async fn openbao_error_while_signing_leaves_no_cacerts_and_a_rerun_completes() {
    let h = Harness::fresh(&["c1", "c2", "c3"]);
    h.bao.fail(
        "sign_intermediate pki meshtrust-root-1 cn=c2",
        1,
        ErrorKind::Unavailable,
    );
    let e = h.converge().await.expect_err("signing fails");
    assert_eq!(port_kind(&e), Some(ErrorKind::Unavailable), "{e}");

    // c1 got its whole bundle; c2 and c3 got nothing at all (no key without a certificate, no partial Secret).
    assert!(h.trust("c1").problems.is_empty());
    assert_eq!(h.cacerts("c2"), None);
    assert_eq!(h.cacerts("c3"), None);
    let c2_writes = h.cluster("c2").calls().writes();
    assert_eq!(c2_writes, lines(&["create_namespace istio-system"]));

    h.clear_calls();
    let (_, report, _) = h.converge().await.expect("the re-run completes");
    assert!(!report.applied.is_empty());
    // c1 is not re-issued: only what was missing is done.
    assert!(
        !h.calls("c1")
            .iter()
            .any(|c| c.starts_with("replace_secret istio-system/cacerts")),
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn kubernetes_error_while_writing_cacerts_leaves_nothing_and_a_rerun_completes() {
    let h = Harness::fresh(&["c1", "c2"]);
    h.cluster("c2").fail(
        "create_secret istio-system/cacerts",
        1,
        ErrorKind::Unavailable,
    );
    let e = h.converge().await.expect_err("the write fails");
    match &e {
        EngineError::Port(p) => {
            assert_eq!(p.kind, ErrorKind::Unavailable);
            assert_eq!(p.system, System::Cluster("c2".into()));
        }
        other => panic!("expected a port error, got {other}"),
    }
    assert_eq!(h.cacerts("c2"), None);
    assert_eq!(
        h.cluster("c2").calls().writes(),
        lines(&[
            "create_namespace istio-system",
            "create_secret istio-system/cacerts", // refused
        ])
    );
    // The intermediate OpenBao signed for the failed write is simply dropped: its key was never stored.
    h.converge().await.expect("the re-run completes");
    h.assert_verified().await;
}

#[tokio::test]
async fn openbao_unreachable_while_observing_writes_nothing() {
    let h = Harness::fresh(&["c1", "c2"]);
    h.bao.fail("mount pki", 1, ErrorKind::Unavailable);
    let e = h.converge().await.expect_err("observe fails");
    assert_eq!(port_kind(&e), Some(ErrorKind::Unavailable));
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn denied_by_openbao_surfaces_as_port_denied_without_retry() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.advance(17 * HOUR); // reader tokens are due for refresh
    h.bao.fail(
        "kv_put secret/istio/remote-secrets/c1",
        1,
        ErrorKind::Denied,
    );
    let e = h.converge().await.expect_err("denied");
    assert_eq!(port_kind(&e), Some(ErrorKind::Denied), "{e}");
    let attempts = h
        .calls("openbao")
        .iter()
        .filter(|c| c.starts_with("kv_put secret/istio/remote-secrets/c1"))
        .count();
    assert_eq!(attempts, 1, "a denial is not retried");
}

#[tokio::test]
async fn denied_by_a_cluster_names_the_cluster() {
    let h = Harness::fresh(&["c1", "c2"]);
    h.cluster("c2").fail("put_object", 1, ErrorKind::Denied);
    let e = h.converge().await.expect_err("denied");
    match e {
        EngineError::Port(p) => {
            assert_eq!(p.kind, ErrorKind::Denied);
            assert_eq!(p.system, System::Cluster("c2".into()));
            assert!(p.to_string().contains("cluster c2"), "{p}");
        }
        other => panic!("expected a port error, got {other}"),
    }
}

#[tokio::test]
async fn unmanaged_cacerts_blocks_and_nothing_is_written() {
    let h = Harness::fresh(&["c1", "c2"]);
    h.insert_unmanaged("c2", "cacerts", &[]);
    h.clear_calls();
    let e = h.converge().await.expect_err("blocked");
    let EngineError::Blocked(blockers) = &e else {
        panic!("expected Blocked, got {e}");
    };
    assert_eq!(blockers.len(), 1, "{blockers:?}");
    assert_eq!(blockers[0].resource, "Secret istio-system/cacerts");
    assert!(e.to_string().contains("--adopt"), "the fix is named: {e}");
    assert_eq!(h.writes(), Vec::<String>::new());
    // The other's Secret is untouched.
    let found = h.cacerts("c2").expect("still there");
    assert!(found.labels.is_empty());
}

#[tokio::test]
async fn unmanaged_remote_secret_blocks_and_nothing_is_written() {
    let h = Harness::fresh(&["c1", "c2"]);
    // istioctl create-remote-secret made this one.
    h.insert_unmanaged(
        "c1",
        "istio-remote-secret-c2",
        &[("istio/multiCluster", "true")],
    );
    h.clear_calls();
    let e = h.converge().await.expect_err("blocked");
    let EngineError::Blocked(blockers) = &e else {
        panic!("expected Blocked, got {e}");
    };
    assert_eq!(blockers.len(), 1, "{blockers:?}");
    assert_eq!(
        blockers[0].resource,
        "Secret istio-system/istio-remote-secret-c2"
    );
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn adopt_takes_over_an_unmanaged_cacerts() {
    let h = Harness::fresh(&["c1", "c2"]);
    h.insert_unmanaged("c1", "cacerts", &[]);
    let engine = h.engine();
    h.converge_with(
        &engine,
        PlanOptions {
            adopt: true,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .await
    .expect("--adopt converges");
    let adopted = h.cacerts("c1").expect("cacerts");
    assert_eq!(
        adopted
            .labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("meshtrust")
    );
    assert!(h.trust("c1").problems.is_empty());
    let c1_cacerts: Vec<String> = h
        .cluster("c1")
        .calls()
        .writes()
        .into_iter()
        .filter(|w| w.contains("cacerts"))
        .collect();
    assert_eq!(c1_cacerts, lines(&["replace_secret istio-system/cacerts"]));
    h.assert_verified().await;
    // Once adopted it is meshtrust's: a plain run has nothing to do.
    h.clear_calls();
    h.converge().await.expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_plan_for_a_cluster_that_is_not_connected_fails_with_unknown_cluster() {
    let h = Harness::fresh(&["c1", "c2"]);
    let (mut plan, snapshot) = h
        .engine()
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    // Only c2's own objects: the changes an applier must find the cluster for.
    plan.changes
        .retain(|c| matches!(&c.target, Target::Cluster { name } if name == "c2"));
    assert!(!plan.changes.is_empty());
    let only_c1 = h.engine_for(h.mesh.clone(), Scope::Admin, &["c1"]);
    let e = only_c1
        .apply(&plan, &snapshot, &mut |_, _| {})
        .await
        .expect_err("c2 is not connected");
    assert!(
        matches!(&e, EngineError::UnknownCluster(c) if c == "c2"),
        "{e}"
    );
    assert!(e.to_string().contains("not connected"));
    assert_eq!(h.writes(), Vec::<String>::new());
}

/// Kubernetes refuses to change a Secret's type, so `--adopt` keeps it (cert-manager writes `kubernetes.io/tls`).
#[tokio::test]
async fn adopt_keeps_the_secret_type() {
    let h = Harness::new(&MeshBuilder::new(&["c1"]).tls_format());
    h.insert_unmanaged("c1", "cacerts", &[]);
    h.cluster("c1").with_state(|s| {
        let key = (ISTIO_NS.to_string(), "cacerts".to_string());
        if let Some(secret) = s.secrets.get_mut(&key) {
            secret.type_ = Some("kubernetes.io/tls".into());
        }
    });
    let options = PlanOptions {
        adopt: true,
        ..Default::default()
    };
    h.converge_with(&h.engine(), options, &mut |_, _| {})
        .await
        .expect("--adopt converges");
    let adopted = h.cacerts("c1").expect("cacerts");
    assert_eq!(adopted.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(adopted.data.contains_key("tls.crt"));
}

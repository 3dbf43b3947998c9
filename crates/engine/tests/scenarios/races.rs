//! Lost races: another writer gets in between observe and a conditional write. The write fails with a conflict,
//! the engine observes again, and the run ends in the same consistent state as if it had been alone.

use std::collections::BTreeMap;

use meshtrust_core::planner::PlanOptions;
use meshtrust_core::secret::SecretBytes;
use meshtrust_engine::{RotationStart, Scope};
use meshtrust_fakes::BaoState;

use crate::support::*;

/// A concurrent writer that writes a KV entry again with its current data: its version moves on.
fn bump(mount: &'static str, path: &'static str) -> impl FnMut(&mut BaoState) + Send + 'static {
    move |s: &mut BaoState| {
        let current =
            s.kv.get(&(mount.to_string(), path.to_string()))
                .and_then(|r| r.versions.last().cloned().flatten())
                .unwrap_or_default();
        s.kv_write_behind(mount, path, current);
    }
}

#[tokio::test]
async fn lost_cas_race_on_the_index_is_retried() {
    let h = Harness::fresh(&["c1"]);
    h.bao
        .before("kv_put secret/istio/meshtrust-index", 1, bump(KV, INDEX));
    h.converge().await.expect("converges");
    let index_puts: Vec<String> = h
        .writes()
        .into_iter()
        .filter(|w| w.contains("meshtrust-index"))
        .collect();
    assert_eq!(
        index_puts,
        lines(&[
            "openbao: kv_put secret/istio/meshtrust-index cas=0",
            "openbao: kv_put secret/istio/meshtrust-index cas=1",
        ])
    );
    let engine = h.engine();
    assert_eq!(engine.index_version().await.expect("index"), 2);
    h.assert_verified().await;
}

/// A write lands, then every try to bump the marker after it loses (fifty agents woken by one change, on a
/// loaded Raft cluster). Planning again finds nothing left to write, so the run must make the bump it owes
/// before it does, or peers would learn of the write only at their hourly full re-read.
#[tokio::test]
async fn a_write_whose_marker_bump_lost_every_try_is_bumped_before_planning_again() {
    let h = Harness::fresh(&["c1"]);
    // The first bump's every try (the first and its 12 retries).
    h.bao.fail(
        "kv_put secret/istio/meshtrust-index",
        13,
        meshtrust_core::ports::ErrorKind::Conflict,
    );
    h.converge().await.expect("converges");
    let engine = h.engine();
    assert_eq!(
        engine.index_version().await.expect("index"),
        1,
        "the owed bump was made"
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn lost_cas_race_on_a_published_kubeconfig_observes_again() {
    let h = Harness::fresh(&["c1", "c2"]);
    h.bao.before(
        "kv_put secret/istio/remote-secrets/c1",
        1,
        bump(KV, "istio/remote-secrets/c1"),
    );
    h.converge().await.expect("converges");
    let puts: Vec<String> = h
        .writes()
        .into_iter()
        .filter(|w| w.contains("remote-secrets/c1"))
        .collect();
    assert_eq!(
        puts,
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c1 cas=0",
            "openbao: kv_put secret/istio/remote-secrets/c1 cas=1",
        ])
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn lost_race_on_cacerts_observes_again_and_succeeds() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.advance(8041 * HOUR); // inside renewBefore (720h) of the 8760h intermediates
    let before = serial(&h, "c1");
    h.cluster("c1")
        .before("replace_secret istio-system/cacerts", 1, |s| {
            s.touch_secret(ISTIO_NS, "cacerts")
        });
    h.converge().await.expect("converges");
    let c1_cacerts: Vec<String> = h
        .cluster("c1")
        .calls()
        .writes()
        .into_iter()
        .filter(|w| w.contains("cacerts"))
        .collect();
    assert_eq!(
        c1_cacerts,
        lines(&[
            "replace_secret istio-system/cacerts",
            "replace_secret istio-system/cacerts",
        ])
    );
    assert_ne!(serial(&h, "c1"), before);
    h.assert_verified().await;
}

#[tokio::test]
async fn cacerts_created_concurrently_is_observed_and_replaced() {
    let h = Harness::fresh(&["c1"]);
    // Another run creates a (broken) managed cacerts between our observe and our create.
    h.cluster("c1")
        .before("create_secret istio-system/cacerts", 1, |s| {
            s.insert_secret(meshtrust_core::ports::SecretObject {
                namespace: ISTIO_NS.into(),
                name: "cacerts".into(),
                labels: BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "meshtrust".into(),
                )]),
                data: BTreeMap::from([("ca-cert.pem".into(), SecretBytes::new("half"))]),
                ..Default::default()
            })
        });
    h.converge().await.expect("converges");
    let writes: Vec<String> = h
        .cluster("c1")
        .calls()
        .writes()
        .into_iter()
        .filter(|w| w.contains("cacerts"))
        .collect();
    assert_eq!(
        writes,
        lines(&[
            "create_secret istio-system/cacerts",
            "replace_secret istio-system/cacerts",
        ])
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn stale_resource_version_on_a_remote_secret_observes_again() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.advance(17 * HOUR); // reader tokens within refreshBefore (8h of 24h)
    h.cluster("c1").before(
        "replace_secret istio-system/istio-remote-secret-c2",
        1,
        |s| s.touch_secret(ISTIO_NS, "istio-remote-secret-c2"),
    );
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c1 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=2",
            "openbao: kv_put secret/istio/remote-secrets/c2 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=3",
            "c1: request_token istio-system/istio-reader-service-account",
            "c1: replace_secret istio-system/istio-remote-secret-c2",
            "c1: replace_secret istio-system/istio-remote-secret-c2",
            "c2: request_token istio-system/istio-reader-service-account",
            "c2: replace_secret istio-system/istio-remote-secret-c1",
        ])
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn concurrent_root_generation_uses_the_other_runs_root() {
    let h = Harness::fresh(&["c1", "c2"]);
    let slow = h.engine();
    let (plan, snapshot) = slow
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    // Another admin run configures OpenBao and generates root 1 meanwhile.
    let names: Vec<&str> = vec!["c1", "c2"];
    let fast = h.engine_for(h.mesh.clone(), Scope::OpenBaoOnly, &names);
    h.converge_with(&fast, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("the other run");
    let report = slow
        .apply(&plan, &snapshot, &mut |_, _| {})
        .await
        .expect("the stale plan still applies");
    assert!(
        report.applied.iter().any(|a| a
            .detail
            .contains("meshtrust-root-1 was created concurrently")),
        "{:?}",
        report.applied
    );
    assert_eq!(
        h.bao.with_state(|s| s.issuer_names("pki")),
        vec!["meshtrust-root-1".to_string()]
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn concurrent_shared_root_creation_uses_the_stored_root() {
    let h = Harness::new(&MeshBuilder::new(&["c1", "c2"]).shared_root());
    let slow = h.engine();
    let (plan, snapshot) = slow
        .plan(h.now(), PlanOptions::default())
        .await
        .expect("plan");
    let fast = h.engine_for(h.mesh.clone(), Scope::OpenBaoOnly, &["c1", "c2"]);
    h.converge_with(&fast, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("the other run");
    let report = slow
        .apply(&plan, &snapshot, &mut |_, _| {})
        .await
        .expect("the stale plan still applies");
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.detail.contains("created concurrently by another run")),
        "{:?}",
        report.applied
    );
    // Only one version of the shared root was ever stored.
    let versions = h.bao.with_state(|s| {
        s.kv.get(&(KV.to_string(), "istio/ca".to_string()))
            .map(|r| r.versions.len())
    });
    assert_eq!(versions, Some(1));
    h.assert_verified().await;
}

#[tokio::test]
async fn concurrent_rotation_start_reports_the_existing_generation() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    let first = engine.start_root_rotation(&snapshot).await.expect("start");
    let second = engine
        .start_root_rotation(&snapshot)
        .await
        .expect("start again");
    assert_eq!(
        first,
        RotationStart::Generated {
            issuer_name: "meshtrust-root-2".into()
        }
    );
    assert_eq!(
        second,
        RotationStart::AlreadyExists {
            issuer_name: "meshtrust-root-2".into()
        }
    );
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: generate_root pki meshtrust-root-2",
            // The policies name the new root before any agent needs it; the second start finds them
            // current.
            "openbao: write_policy meshtrust-admin",
            "openbao: write_policy meshtrust-agent-c1",
            "openbao: write_policy meshtrust-agent-c2",
            // Each start bumps the change index so idle agents take up the new root at once.
            "openbao: kv_put secret/istio/meshtrust-index cas=2",
            "openbao: generate_root pki meshtrust-root-2",
            "openbao: kv_put secret/istio/meshtrust-index cas=3",
        ])
    );
    assert_eq!(h.bao.with_state(|s| s.issuer_names("pki")).len(), 2);
}

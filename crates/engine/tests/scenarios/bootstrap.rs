//! A mesh from nothing: the exact calls of a first run, the facts `verify` checks afterwards, and a second run
//! that writes nothing.

use crate::support::*;

/// OpenBao's configuration for clusters `names`, in plan order.
fn openbao_config_writes(names: &[&str]) -> Vec<String> {
    // The admin policy first: a token holding only it needs its rules for the mounts that follow.
    let mut out = vec![
        "openbao: enable_mount secret kv".to_string(),
        "openbao: write_policy meshtrust-admin".to_string(),
    ];
    for n in names {
        out.push(format!("openbao: enable_auth kubernetes_{n} kubernetes"));
        out.push(format!(
            "openbao: write_kubernetes_auth_config kubernetes_{n}"
        ));
        out.push(format!(
            "openbao: write_kubernetes_auth_role kubernetes_{n} meshtrust-agent"
        ));
    }
    for n in names {
        out.push(format!("openbao: write_policy meshtrust-agent-{n}"));
    }
    out
}

#[tokio::test]
async fn fresh_single_cluster_mesh_makes_exactly_these_calls() {
    let h = Harness::fresh(&["c1"]);
    let (plan, report, _) = h.converge().await.expect("converges");
    assert_eq!(report.applied.len(), plan.changes.len());
    let mut expected = openbao_config_writes(&["c1"]);
    expected.extend(lines(&[
        "openbao: enable_mount pki pki",
        "openbao: generate_root pki meshtrust-root-1",
        "openbao: sign_intermediate pki meshtrust-root-1 cn=c1 intermediate CA (test-mesh)",
        "openbao: kv_put secret/istio/remote-secrets/c1 cas=0",
        "openbao: kv_put secret/istio/meshtrust-index cas=0",
        "c1: create_namespace istio-system",
        "c1: create_secret istio-system/cacerts",
        "c1: put_object ServiceAccount istio-reader-service-account",
        "c1: put_object ClusterRole istio-reader-clusterrole-istio-system",
        "c1: put_object ClusterRoleBinding istio-reader-clusterrole-istio-system",
        "c1: request_token istio-system/istio-reader-service-account",
    ]));
    assert_eq!(h.writes(), expected);
    h.assert_verified().await;
}

#[tokio::test]
async fn fresh_three_cluster_mesh_converges_to_one_root_everywhere() {
    let h = Harness::fresh(&["c1", "c2", "c3"]);
    h.converge().await.expect("converges");
    let mut expected = openbao_config_writes(&["c1", "c2", "c3"]);
    expected.extend(lines(&[
        "openbao: enable_mount pki pki",
        "openbao: generate_root pki meshtrust-root-1",
        "openbao: sign_intermediate pki meshtrust-root-1 cn=c1 intermediate CA (test-mesh)",
        "openbao: sign_intermediate pki meshtrust-root-1 cn=c2 intermediate CA (test-mesh)",
        "openbao: sign_intermediate pki meshtrust-root-1 cn=c3 intermediate CA (test-mesh)",
        "openbao: kv_put secret/istio/remote-secrets/c1 cas=0",
        "openbao: kv_put secret/istio/meshtrust-index cas=0",
        "openbao: kv_put secret/istio/remote-secrets/c2 cas=0",
        "openbao: kv_put secret/istio/meshtrust-index cas=1",
        "openbao: kv_put secret/istio/remote-secrets/c3 cas=0",
        "openbao: kv_put secret/istio/meshtrust-index cas=2",
    ]));
    for (n, peers) in [
        ("c1", ["c2", "c3"]),
        ("c2", ["c1", "c3"]),
        ("c3", ["c1", "c2"]),
    ] {
        expected.extend([
            format!("{n}: create_namespace istio-system"),
            format!("{n}: create_secret istio-system/cacerts"),
            format!("{n}: put_object ServiceAccount istio-reader-service-account"),
            format!("{n}: put_object ClusterRole istio-reader-clusterrole-istio-system"),
            format!("{n}: put_object ClusterRoleBinding istio-reader-clusterrole-istio-system"),
            format!("{n}: request_token istio-system/istio-reader-service-account"),
        ]);
        for p in peers {
            expected.push(format!(
                "{n}: create_secret istio-system/istio-remote-secret-{p}"
            ));
        }
    }
    assert_eq!(h.writes(), expected);
    let snapshot = h.assert_verified().await;
    // Every intermediate is signed by the one root OpenBao holds, under its pinned name.
    let root = snapshot
        .facts()
        .openbao
        .newest_root()
        .expect("a root")
        .clone();
    for n in ["c1", "c2", "c3"] {
        let state = h.trust(n);
        assert_eq!(
            state.issuer_fingerprint.as_deref(),
            Some(root.cert.fingerprint.as_str())
        );
        let cn = state.ca_cert.expect("cert").subject_cn;
        assert_eq!(cn, format!("{n} intermediate CA (test-mesh)"));
    }
    // Each cluster holds a remote secret for each peer, and none for itself.
    assert_eq!(snapshot.synced_kubeconfigs().len(), 6);
    assert!(h.secret("c1", "istio-remote-secret-c1").is_none());
}

#[tokio::test]
async fn a_second_run_writes_nothing() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let (plan, report, _) = h.converge().await.expect("converges");
    assert!(plan.is_empty(), "{plan}");
    assert!(report.applied.is_empty());
    assert_eq!(h.bao.calls().writes(), Vec::<String>::new());
    for c in ["c1", "c2", "c3"] {
        assert_eq!(h.cluster(c).calls().writes(), Vec::<String>::new(), "{c}");
    }
}

#[tokio::test]
async fn the_index_version_moves_only_when_something_is_published() {
    let h = Harness::fresh(&["c1", "c2"]);
    let engine = h.engine();
    assert_eq!(engine.index_version().await.expect("poll"), 0);
    h.converge().await.expect("converges");
    assert_eq!(engine.index_version().await.expect("poll"), 2);
    h.converge().await.expect("converges");
    assert_eq!(engine.index_version().await.expect("poll"), 2);
}

#[tokio::test]
async fn a_missing_openbao_namespace_is_created_first() {
    let h = Harness::new(&MeshBuilder::new(&["c1"]).bao_namespace("production"));
    h.converge().await.expect("converges");
    let writes = h.writes();
    assert_eq!(writes[0], "openbao: create_namespace production");
    assert_eq!(writes[1], "openbao: enable_mount secret kv");
    assert!(h.bao.with_state(|s| s.namespaces.contains("production")));
    h.assert_verified().await;
    h.clear_calls();
    h.converge().await.expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_namespace_created_concurrently_is_used() {
    let h = Harness::new(&MeshBuilder::new(&["c1"]).bao_namespace("production"));
    h.bao.before("create_namespace production", 1, |s| {
        s.namespaces.insert("production".into());
    });
    h.converge().await.expect("converges");
    h.assert_verified().await;
}

#[tokio::test]
async fn shared_root_mode_bootstraps_and_is_idempotent() {
    let h = Harness::new(&MeshBuilder::new(&["c1", "c2"]).shared_root());
    h.converge().await.expect("converges");
    let trust_writes: Vec<String> = h
        .writes()
        .into_iter()
        .filter(|w| w.contains("istio/ca") || w.contains("cacerts") || w.contains("pki"))
        .collect();
    assert_eq!(
        trust_writes,
        lines(&[
            "openbao: kv_put secret/istio/ca cas=0",
            "c1: create_secret istio-system/cacerts",
            "c2: create_secret istio-system/cacerts",
        ])
    );
    h.assert_verified().await;
    // Every cluster's CA is the shared root itself.
    for n in ["c1", "c2"] {
        let state = h.trust(n);
        let cert = state.ca_cert.expect("cert");
        assert_eq!(state.trusted_roots, vec![cert.fingerprint.clone()]);
    }
    h.clear_calls();
    h.converge().await.expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn the_tls_secret_format_bootstraps_and_is_idempotent() {
    let h = Harness::new(&MeshBuilder::new(&["c1", "c2"]).tls_format());
    h.converge().await.expect("converges");
    let keys: Vec<String> = h.cacerts("c1").expect("cacerts").data.into_keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    h.assert_verified().await;
    h.clear_calls();
    h.converge().await.expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_cacerts_deleted_by_hand_is_reissued_from_the_same_root() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let root = h.trust("c2").trusted_roots;
    h.cluster("c2").with_state(|s| {
        s.secrets
            .remove(&(ISTIO_NS.to_string(), "cacerts".to_string()));
    });
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: sign_intermediate pki meshtrust-root-1 cn=c2 intermediate CA (test-mesh)",
            "c2: create_secret istio-system/cacerts",
        ])
    );
    assert_eq!(h.trust("c2").trusted_roots, root);
    h.assert_verified().await;
}

// A soft-deleted KV entry (`bao kv delete`) reads as absent, yet its metadata keeps the version; the engine
// writes at `KvMetadata::current_version`. A deleted change marker costs nothing: it is only a hint, and the
// next publish writes over it.
#[tokio::test]
async fn a_soft_deleted_marker_is_written_over() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.bao.with_state(|s| s.kv_soft_delete(KV, INDEX));
    h.converge().await.expect("converges");
    assert_eq!(h.writes(), Vec::<String>::new(), "nothing depends on it");
    h.advance(17 * HOUR);
    h.converge()
        .await
        .expect("the refreshes bump the marker again");
    assert!(
        h.writes()
            .iter()
            .any(|w| w == "openbao: kv_put secret/istio/meshtrust-index cas=3"),
        "{:?}",
        h.writes()
    );
    h.assert_verified().await;
}

// The same with a cluster's published entry: it reads as unpublished, so its cluster publishes again at once,
// on top of the deleted version; peers keep their copies meanwhile.
#[tokio::test]
async fn a_soft_deleted_entry_is_published_again() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.bao
        .with_state(|s| s.kv_soft_delete(KV, "istio/remote-secrets/c2"));
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c2 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=2",
            "c1: replace_secret istio-system/istio-remote-secret-c2",
            "c2: request_token istio-system/istio-reader-service-account",
        ])
    );
    h.assert_verified().await;
}

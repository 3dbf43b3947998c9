//! Cross-cluster discovery: reader tokens refreshed and resynced, peers leaving the mesh, hand edits repaired.

use meshtrust_core::ports::{ObjectKind, OpenBao, SecretObject};
use meshtrust_core::secret::SecretBytes;
use meshtrust_engine::Scope;

use crate::support::*;

#[tokio::test]
async fn reader_token_near_expiry_is_republished_and_peers_resync() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let before = h.secret("c2", "istio-remote-secret-c1").expect("synced");
    h.advance(17 * HOUR); // 7h left of the 24h token: within refreshBefore 8h
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c1 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=3",
            "openbao: kv_put secret/istio/remote-secrets/c2 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=4",
            "openbao: kv_put secret/istio/remote-secrets/c3 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=5",
            "c1: request_token istio-system/istio-reader-service-account",
            "c1: replace_secret istio-system/istio-remote-secret-c2",
            "c1: replace_secret istio-system/istio-remote-secret-c3",
            "c2: request_token istio-system/istio-reader-service-account",
            "c2: replace_secret istio-system/istio-remote-secret-c1",
            "c2: replace_secret istio-system/istio-remote-secret-c3",
            "c3: request_token istio-system/istio-reader-service-account",
            "c3: replace_secret istio-system/istio-remote-secret-c1",
            "c3: replace_secret istio-system/istio-remote-secret-c2",
        ])
    );
    let after = h.secret("c2", "istio-remote-secret-c1").expect("synced");
    assert_ne!(before.data, after.data, "a fresh token");
    assert_eq!(
        after
            .annotations
            .get("meshtrust.dev/kv-version")
            .map(String::as_str),
        Some("2")
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn a_token_far_from_expiry_is_left_alone() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.advance(15 * HOUR); // 9h left: outside refreshBefore 8h
    h.converge().await.expect("converges");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_peer_removed_from_the_mesh_file_is_unpublished_and_its_secrets_deleted() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let cacerts_before = (h.cacerts("c1"), h.cacerts("c2"));
    let smaller = MeshBuilder::new(&["c1", "c2"]).build();
    let engine = h.engine_for(smaller, Scope::Admin, &["c1", "c2"]);
    h.converge_with(&engine, Default::default(), &mut |_, _| {})
        .await
        .expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            // c3's agent loses its OpenBao access first, while the admin policy in force still grants it.
            "openbao: disable_auth kubernetes_c3",
            "openbao: delete_policy meshtrust-agent-c3",
            // The admin policy names each cluster's auth mount: it loses c3's.
            "openbao: write_policy meshtrust-admin",
            "openbao: kv_delete secret/istio/remote-secrets/c3",
            "c1: delete_secret istio-system/istio-remote-secret-c3",
            "c2: delete_secret istio-system/istio-remote-secret-c3",
        ])
    );
    assert_eq!(h.secret("c1", "istio-remote-secret-c3"), None);
    assert_eq!(h.secret("c2", "istio-remote-secret-c3"), None);
    assert!(h.secret("c1", "istio-remote-secret-c2").is_some());
    assert_eq!((h.cacerts("c1"), h.cacerts("c2")), cacerts_before);
    // The departed cluster itself is not touched: its own objects stay until someone removes them.
    assert!(h.cacerts("c3").is_some());
    let published = h
        .bao
        .kv_list(KV, "istio/remote-secrets")
        .await
        .expect("list");
    assert_eq!(published, ["c1", "c2"]);
    // And the next run is quiet.
    h.clear_calls();
    h.converge_with(&engine, Default::default(), &mut |_, _| {})
        .await
        .expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn an_incomplete_published_entry_is_republished_and_peers_keep_their_copy_meanwhile() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let path = "istio/remote-secrets/c1";
    h.bao.with_state(|s| {
        let mut data =
            s.kv.get(&(KV.to_string(), path.to_string()))
                .and_then(|r| r.versions.last().cloned().flatten())
                .expect("entry");
        data.remove("configHash");
        s.kv_write_behind(KV, path, data);
    });
    // c2's agent alone cannot fix c1's entry: it keeps its copy and says why, deleting nothing.
    let (plan, _) = h
        .agent("c2")
        .plan(h.now(), Default::default())
        .await
        .expect("plan");
    assert!(plan.changes.is_empty(), "{plan}");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("c1's published entry is missing or unreadable")),
        "{:?}",
        plan.warnings
    );
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c1 cas=2",
            "openbao: kv_put secret/istio/meshtrust-index cas=2",
            "c1: request_token istio-system/istio-reader-service-account",
            "c2: replace_secret istio-system/istio-remote-secret-c1",
        ])
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn a_forged_marker_redirects_nothing_and_deletes_nothing() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let before = (h.secret("c1", "istio-remote-secret-c2"), h.cacerts("c1"));
    let seen = h.engine().index_version().await.expect("marker");
    for forged in ["../../sys/mounts/pki", "c3", "", "c2/../c1"] {
        h.bao.with_state(|s| {
            s.kv_write_behind(
                KV,
                INDEX,
                [("cluster".to_string(), SecretBytes::new(forged))].into(),
            )
        });
    }
    let agent = h.agent("c1");
    let current = agent.index_version().await.expect("marker");
    let changed = agent
        .changed_since(seen, current)
        .await
        .expect("read")
        .expect("within the kept versions");
    assert!(changed.is_empty(), "only mesh clusters count: {changed:?}");
    h.clear_calls();
    h.converge_with(&agent, Default::default(), &mut |_, _| {})
        .await
        .expect("converges");
    assert_eq!(h.writes(), Vec::<String>::new());
    assert!(
        h.calls("openbao").iter().all(|c| !c.contains("..")),
        "{:?}",
        h.calls("openbao")
    );
    assert_eq!(
        (h.secret("c1", "istio-remote-secret-c2"), h.cacerts("c1")),
        before
    );
}

#[tokio::test]
async fn a_remote_secret_deleted_by_hand_is_recreated() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.cluster("c1").with_state(|s| {
        s.secrets
            .remove(&(ISTIO_NS.to_string(), "istio-remote-secret-c2".to_string()));
    });
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&["c1: create_secret istio-system/istio-remote-secret-c2"])
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn a_remote_secret_from_an_old_version_is_resynced() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.cluster("c1").with_state(|s| {
        let key = (ISTIO_NS.to_string(), "istio-remote-secret-c2".to_string());
        let mut edited: SecretObject = s.secrets.get(&key).cloned().expect("synced");
        edited
            .annotations
            .insert("meshtrust.dev/kv-version".into(), "0".into());
        s.insert_secret(edited);
    });
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&["c1: replace_secret istio-system/istio-remote-secret-c2"])
    );
}

#[tokio::test]
async fn a_deleted_reader_service_account_is_recreated_and_republished() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.cluster("c2").with_state(|s| {
        s.objects.remove(&(
            ObjectKind::ServiceAccount,
            Some(ISTIO_NS.to_string()),
            "istio-reader-service-account".to_string(),
        ));
    });
    h.converge().await.expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c2 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=2",
            "c1: replace_secret istio-system/istio-remote-secret-c2",
            "c2: put_object ServiceAccount istio-reader-service-account",
            "c2: request_token istio-system/istio-reader-service-account",
        ])
    );
    h.assert_verified().await;
}

#[tokio::test]
async fn a_peer_removed_from_the_mesh_file_loses_its_openbao_access() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let smaller = MeshBuilder::new(&["c1", "c2"]).build();
    let engine = h.engine_for(smaller, Scope::Admin, &["c1", "c2"]);
    h.converge_with(&engine, Default::default(), &mut |_, _| {})
        .await
        .expect("converges");
    h.bao.with_state(|s| {
        assert!(!s.policies.contains_key("meshtrust-agent-c3"));
        assert!(!s.auth_mounts.contains_key("kubernetes_c3"));
        assert!(!s.roles.keys().any(|(mount, _)| mount == "kubernetes_c3"));
        assert!(s.auth_mounts.contains_key("kubernetes_c1"), "others stay");
    });
    // An auth mount that someone else made for a name the mesh file dropped is not meshtrust's: it stays.
    h.bao.with_state(|s| {
        s.auth_mounts
            .insert("kubernetes_other".into(), "kubernetes".into());
    });
    h.clear_calls();
    h.converge_with(&engine, Default::default(), &mut |_, _| {})
        .await
        .expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn published_names_that_are_not_cluster_names_touch_no_path() {
    let h = Harness::settled(&["c1", "c2"]).await;
    for name in ["../../sys/mounts/pki", "Bad_Name", "-x", "a b"] {
        h.bao.with_state(|s| {
            s.kv_write_behind(
                KV,
                &format!("istio/remote-secrets/{name}"),
                [(name.to_string(), SecretBytes::new("x"))].into(),
            )
        });
    }
    h.clear_calls();
    h.converge().await.expect("converges");
    assert_eq!(h.writes(), Vec::<String>::new());
    assert!(
        h.calls("openbao")
            .iter()
            .all(|c| !c.contains("sys/mounts") && !c.starts_with("kv_delete")),
        "{:?}",
        h.calls("openbao")
    );
    h.assert_verified().await;
}

/// A peer whose entry vanished from OpenBao while it is still in the mesh file keeps its Secret everywhere:
/// what cannot be read is no reason to delete.
#[tokio::test]
async fn a_vanished_entry_deletes_nothing() {
    let h = Harness::settled(&["c1", "c2", "c3"]).await;
    let before = h.secret("c1", "istio-remote-secret-c3");
    h.bao.with_state(|s| {
        s.kv.remove(&(KV.to_string(), "istio/remote-secrets/c3".to_string()));
    });
    h.clear_calls();
    let (plan, _) = h
        .agent("c1")
        .plan(h.now(), Default::default())
        .await
        .expect("plan");
    assert!(plan.changes.is_empty(), "{plan}");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("c3's published entry")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(h.secret("c1", "istio-remote-secret-c3"), before);
}

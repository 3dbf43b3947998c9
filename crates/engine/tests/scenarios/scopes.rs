//! What each scope may change: an agent only its own cluster and its own published entry, `--openbao-only` only
//! OpenBao.

use meshtrust_core::plan::Action;
use meshtrust_core::planner::PlanOptions;
use meshtrust_engine::Scope;

use crate::support::*;

/// OpenBao calls only the admin makes: configuration and the CA.
const ADMIN_ONLY: [&str; 10] = [
    "create_namespace",
    "enable_mount",
    "tune_mount",
    "enable_auth",
    "write_kubernetes_auth_config",
    "write_kubernetes_auth_role",
    "write_policy",
    "generate_root",
    "kv_delete",
    "kv_put secret/istio/ca",
];

fn admin_writes(h: &Harness) -> Vec<String> {
    h.bao
        .calls()
        .writes()
        .into_iter()
        .filter(|w| ADMIN_ONLY.iter().any(|a| w.starts_with(a)))
        .collect()
}

#[tokio::test]
async fn openbao_only_never_writes_to_clusters() {
    let h = Harness::fresh(&["c1", "c2"]);
    let engine = h.engine_for(h.mesh.clone(), Scope::OpenBaoOnly, &["c1", "c2"]);
    let (plan, _, _) = h
        .converge_with(&engine, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("converges");
    assert!(plan.changes.iter().all(|c| c.action.needs_openbao_admin()));
    assert_eq!(h.cluster("c1").calls().writes(), Vec::<String>::new());
    assert_eq!(h.cluster("c2").calls().writes(), Vec::<String>::new());
    assert_eq!(
        h.bao.with_state(|s| s.issuer_names("pki")),
        vec!["meshtrust-root-1".to_string()]
    );
    // Again: nothing left for OpenBao, and still nothing in the clusters.
    h.clear_calls();
    h.converge_with(&engine, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("settled");
    assert_eq!(h.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn agents_alone_finish_a_mesh_the_admin_configured_with_openbao_only() {
    let h = Harness::fresh(&["c1", "c2"]);
    let admin = h.engine_for(h.mesh.clone(), Scope::OpenBaoOnly, &["c1", "c2"]);
    h.converge_with(&admin, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("OpenBao configured");
    for cluster in ["c1", "c2"] {
        h.deploy_files(cluster).await;
    }
    h.clear_calls();
    // c1's agent cannot sync c2 yet (c2 has not published); c2's can sync c1; c1's second round syncs c2.
    for cluster in ["c1", "c2", "c1"] {
        let agent = h.agent(cluster);
        h.converge_with(&agent, PlanOptions::default(), &mut |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("agent {cluster}: {e}"));
    }
    assert_eq!(admin_writes(&h), Vec::<String>::new());
    h.assert_verified().await;
}

#[tokio::test]
async fn an_agent_writes_only_its_own_cluster_and_its_own_entry() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.advance(17 * HOUR);
    let agent = h.agent("c1");
    h.converge_with(&agent, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("converges");
    assert_eq!(
        h.writes(),
        lines(&[
            "openbao: kv_put secret/istio/remote-secrets/c1 cas=1",
            "openbao: kv_put secret/istio/meshtrust-index cas=2",
            "c1: request_token istio-system/istio-reader-service-account",
        ])
    );
    // c2 never saw a call from c1's agent.
    assert_eq!(h.calls("c2"), Vec::<String>::new());
}

#[tokio::test]
async fn an_agent_never_configures_openbao_or_generates_a_root() {
    // Nothing exists yet: the agent can do its own cluster's share only, and must not create the CA.
    let h = Harness::fresh(&["c1", "c2"]);
    let agent = h.agent("c1");
    let result = h
        .converge_with(&agent, PlanOptions::default(), &mut |_, _| {})
        .await;
    let e = result.expect_err("no root to sign with yet");
    eprintln!("agent on an empty OpenBao: {e}");
    assert_eq!(admin_writes(&h), Vec::<String>::new());
    assert_eq!(
        h.bao.with_state(|s| s.issuer_names("pki")),
        Vec::<String>::new()
    );
    // The agent's observation never reads OpenBao's configuration (its policy cannot).
    assert!(
        !h.calls("openbao")
            .iter()
            .any(|c| c.starts_with("read_policy") || c.starts_with("auth_mount")),
        "{:?}",
        h.calls("openbao")
    );
}

#[tokio::test]
async fn an_idle_agent_round_writes_nothing_and_polls_one_entry() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let agent = h.agent("c2");
    let version = agent.index_version().await.expect("poll");
    assert_eq!(
        h.calls("openbao"),
        lines(&["kv_get secret/istio/meshtrust-index"])
    );
    let (plan, _, snapshot) = h
        .converge_with(&agent, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("converges");
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(snapshot.index_version(), version);
    assert_eq!(h.writes(), Vec::<String>::new());
}

/// The agent holds no right to write RBAC or namespaces: when the reader identity is missing it says who makes
/// it, writes no RBAC, and does not publish a token of a ServiceAccount that does not exist.
#[tokio::test]
async fn an_agent_never_writes_rbac_and_names_the_fix() {
    let h = Harness::settled(&["c1", "c2"]).await;
    h.cluster("c1").with_state(|s| s.objects.clear());
    h.clear_calls();
    let agent = h.agent("c1");
    let (plan, _, _) = h
        .converge_with(&agent, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("converges");
    assert!(
        plan.changes.iter().all(|c| !c.action.needs_cluster_admin()
            && !matches!(c.action, Action::PublishRemoteSecret { .. })),
        "{plan}"
    );
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("istio-reader-service-account"))
        .unwrap_or_else(|| panic!("a warning names the reader identity: {:?}", plan.warnings));
    assert!(
        warning.contains("meshtrust render agent --cluster c1")
            && warning.contains("meshtrust apply"),
        "{warning}"
    );
    assert_eq!(h.writes(), Vec::<String>::new());
    // The admin creates it.
    h.converge().await.expect("admin converges");
    h.assert_verified().await;
}

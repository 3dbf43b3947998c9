//! Day two: OpenBao goes back in time while the clusters keep what they had, with real istiods sampled every
//! 200 ms (each cluster's workload certificate against every other cluster's `istio-ca-root-cert`).
//!
//! * Restore: a 3-node Raft OpenBao with two agents running. The mesh rotates to root 2, a Raft snapshot is
//!   taken, then the mesh moves on (a renewal, a token refresh, a rotation to root 3), and the snapshot is
//!   restored: OpenBao holds roots 1 and 2 and trust facts from before root 3, while every cluster trusts and
//!   signs with root 3 only. The agents keep root 3, move the mesh back to root 2 through the phases, and drop
//!   root 3 only after the dwell. No gap, no Secret deleted, `verify` passes.
//! * Lost store: the dev OpenBao is replaced by an empty one. `apply` makes a new root and keeps the old one;
//!   `ca rotate-root --wait` finishes the move after the dwell. No gap.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use meshtrust_testenv::{Istiod, IstiodOptions, TestCluster, TestEnv, mesh_file_with};
use support::Mesh;
use support::agent_process::AgentProcess;
use support::istio::{pem_certs, workload_identity};
use support::trust_sampler::{Sampler, cacerts_data, served_roots, settled_on};

const DWELL: &str = "ca:\n  rootRotation:\n    phaseDwell: 8s\n  intermediate:\n    ttl: 2h\n    renewBefore: 10m\nremoteSecrets:\n  tokenTtl: 1h\n  refreshBefore: 10m\n";

/// `meshtrust` against the Raft cluster (failing over to any node) with the root token.
fn ha_meshtrust(env: &TestEnv, file: &Path, args: &[&str]) -> std::process::Output {
    let ha = env.bao_ha.as_ref().expect("HA cluster");
    Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(args)
        .arg("--mesh")
        .arg(file)
        .env("BAO_ADDR", &ha.nodes[0].addr)
        .env("BAO_ADDRS", ha.addrs().join(" "))
        .env("BAO_TOKEN", &ha.root_token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .expect("run meshtrust")
}

fn ha_ok(env: &TestEnv, file: &Path, args: &[&str]) -> String {
    let out = ha_meshtrust(env, file, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "meshtrust {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `bao <args>` against the active node, requiring success.
fn ha_bao(env: &TestEnv, args: &[&str]) {
    let ha = env.bao_ha.as_ref().expect("HA cluster");
    let leader = ha.wait_for_leader(Duration::from_secs(30)).expect("leader");
    let out = ha.cli(leader).args(args).output().expect("run bao");
    assert!(
        out.status.success(),
        "bao {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Names of the Secrets meshtrust manages in a cluster's istio-system.
async fn managed_secrets(cluster: &TestCluster) -> BTreeSet<String> {
    let client = cluster.client().await.expect("client");
    Api::<Secret>::namespaced(client, "istio-system")
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshtrust"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect()
}

async fn all_managed(clusters: &[TestCluster]) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    for c in clusters {
        out.push(managed_secrets(c).await);
    }
    out
}

async fn start_istiods(clusters: &[TestCluster], dir: &Path) -> Vec<Istiod> {
    let mut istiods = Vec::new();
    for cluster in clusters {
        workload_identity(cluster).await;
        cluster
            .create_login_service_account("istio-system", "meshtrust-agent")
            .await
            .expect("agent identity");
        istiods.push(
            Istiod::start(cluster, dir, &IstiodOptions { multiroot: true })
                .await
                .expect("istiod starts"),
        );
    }
    istiods
}

#[test]
fn a_restored_snapshot_moves_the_mesh_back_without_a_gap() {
    let test_start = Instant::now();
    // Started outside any runtime: starting the Raft cluster blocks on a runtime of its own.
    let env = TestEnv::builder()
        .clusters(2)
        .openbao_ha()
        .start()
        .expect("test environment");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(restore_while_agents_run(&env, test_start));
}

async fn restore_while_agents_run(env: &TestEnv, test_start: Instant) {
    let file = env.dir().join("mesh.yaml");
    std::fs::write(&file, mesh_file_with(env, DWELL)).expect("mesh file");
    ha_ok(env, &file, &["apply"]);
    let clusters = &env.clusters;
    let istiods = start_istiods(clusters, env.dir()).await;
    let ha = env.bao_ha.as_ref().expect("HA");
    let addrs = ha.addrs().join(" ");
    let _agents: Vec<AgentProcess> = (0..2)
        .map(|i| AgentProcess::start(env, i, &file, &ha.nodes[i].addr, Some(&addrs)))
        .collect();
    let mut sampler = Sampler::default();
    sampler
        .until(clusters, &istiods, Duration::from_secs(60), settled_on(1))
        .await;
    sampler.gaps.clear();

    // A first rotation, so that OpenBao holds trust facts and two roots when the snapshot is taken.
    ha_ok(env, &file, &["ca", "rotate-root", "--start"]);
    sampler.note("rotate-root --start: root 2");
    sampler
        .until(clusters, &istiods, Duration::from_secs(120), settled_on(2))
        .await;
    let snapshot = env.dir().join("raft.snap");
    ha_bao(
        env,
        &["operator", "raft", "snapshot", "save", &path(&snapshot)],
    );
    sampler.note("Raft snapshot saved");
    let managed_before = all_managed(clusters).await;

    // The mesh moves on: a renewal and a token refresh (the admin with a mesh file that wants them now), then
    // a rotation to root 3 carried by the agents.
    let eager = env.dir().join("mesh-eager.yaml");
    let eager_settings = DWELL
        .replace("renewBefore: 10m", "renewBefore: 1h59m55s")
        .replace("refreshBefore: 10m", "refreshBefore: 59m59s");
    std::fs::write(&eager, mesh_file_with(env, &eager_settings)).expect("mesh file");
    let moved = ha_ok(env, &eager, &["apply"]);
    assert!(
        moved.contains("intermediate serial") && moved.contains("published version"),
        "a renewal and a token refresh: {moved}"
    );
    sampler.note("admin renewed both intermediates and refreshed both reader tokens");
    ha_ok(env, &file, &["ca", "rotate-root", "--start"]);
    sampler.note("rotate-root --start: root 3");
    sampler
        .until(clusters, &istiods, Duration::from_secs(120), settled_on(3))
        .await;

    // Back to the snapshot, agents running.
    ha_bao(
        env,
        &[
            "operator",
            "raft",
            "snapshot",
            "restore",
            "-force",
            &path(&snapshot),
        ],
    );
    sampler.note("Raft snapshot restored: OpenBao holds roots 1 and 2, the clusters root 3");
    let restored_at = Instant::now();
    let plan = ha_ok(env, &file, &["plan"]);
    assert!(plan.contains("OpenBao does not hold"), "{plan}");
    // Root 3 is kept until every cluster has signed with root 2 for the dwell.
    sampler
        .until(clusters, &istiods, Duration::from_secs(180), settled_on(2))
        .await;
    let converged = restored_at.elapsed();
    sampler.note(&format!(
        "converged on root 2, {:.1} s after the restore",
        converged.as_secs_f64()
    ));
    let verify = ha_meshtrust(env, &file, &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert_eq!(
        all_managed(clusters).await,
        managed_before,
        "no managed Secret deleted"
    );
    sampler.report(test_start);
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_is_recovered_onto_a_new_root_without_a_gap() {
    let test_start = Instant::now();
    let mut mesh = Mesh::start(2, "ca:\n  rootRotation:\n    phaseDwell: 8s\n");
    mesh.ok(&["apply"]);
    let istiods = start_istiods(&mesh.env.clusters, mesh.env.dir()).await;
    let mut sampler = Sampler::default();
    sampler
        .until(
            &mesh.env.clusters,
            &istiods,
            Duration::from_secs(60),
            settled_on(1),
        )
        .await;
    sampler.gaps.clear();
    let old_root = root_fingerprints(&mesh.env.clusters[0]).await;

    mesh.env
        .bao
        .restart_empty()
        .expect("an empty OpenBao on the same address");
    sampler.note("OpenBao replaced by an empty one: the root key is gone");
    let plan = mesh.ok(&["plan"]);
    assert!(plan.contains("OpenBao does not hold"), "{plan}");
    assert!(!plan.contains("new ec 256 intermediate"), "{plan}");
    let lost_at = Instant::now();
    // The documented recovery: apply (OpenBao's configuration, a new root trusted beside the old one), then
    // the phases, the old root kept for the dwell.
    mesh.ok(&["apply"]);
    sampler.note("apply: a new root, trusted beside the old one");
    let wait = mesh.spawn(&["ca", "rotate-root", "--wait"]);
    let clusters = &mesh.env.clusters;
    let mut done = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done {
        assert!(Instant::now() < deadline, "{:#?}", sampler.timeline);
        sampler.sample(clusters, &istiods).await;
        done = true;
        for c in clusters {
            let roots = root_fingerprints(c).await;
            let served = served_roots(c).await.unwrap_or_default();
            done &= roots.len() == 1 && roots != old_root && pem_certs(&served).len() == 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sampler.note(&format!(
        "every cluster on the new root only, {:.1} s after the loss",
        lost_at.elapsed().as_secs_f64()
    ));
    let out = wait.wait_with_output().expect("rotate-root --wait ends");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Rotation complete"), "{stdout}");
    mesh.ok(&["verify"]);
    sampler.report(test_start);
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);
}

/// Fingerprints of the roots in a cluster's `cacerts` `root-cert.pem`.
async fn root_fingerprints(cluster: &TestCluster) -> Vec<String> {
    let data = cacerts_data(cluster).await;
    meshtrust_pki::cacerts::inspect(&data, 0).trusted_roots
}

fn path(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

//! The agent as real pods on a real node per cluster (kubelet, containerd, kube-proxy; see
//! crates/testenv/src/node): meshtrust's image built from this tree (`scripts/build-image meshtrust`), the Helm
//! chart installed for real with `helm install --wait`, OpenBao reached from the pods over TLS with a private CA;
//! then istiod as pods beside them (Istio's own charts by `scripts/dev-env istio`, the pilot image built here),
//! through a renewal and a root rotation the agent pods carry.
//! Needs root, the node packages and binaries (`scripts/lib.sh` ensure_node); it fails, never skips, without them.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use support::Mesh;
use support::istio::{pem_certs, workload_identity};
use support::node::{
    helm, kubectl, mesh_with_nodes, mesh_with_nodes_and_openbao_ha, port_forward_get, repo, run,
    script,
};
use support::pod_istiod::{self, PodIstiod, pilot_image};
use support::trust_sampler::{Sampler, WorkloadCa, settled_on};

const NS: &str = "istio-system";
const SELECTOR: &str = "app.kubernetes.io/name=meshtrust-agent";
/// The first test's mesh: a short rotation dwell (longer than the kubelet takes to bring a changed `cacerts`
/// into istiod's pod, measured below) and 2-hour intermediates, so an admin can ask for a renewal now.
const ROTATION: &str = "ca:\n  rootRotation:\n    phaseDwell: 30s\n  intermediate:\n    ttl: 2h\n    renewBefore: 10m\n";

/// meshtrust's image, built once per test binary from the working tree by the script users and CI run.
fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| PathBuf::from(script(&["build-image", "meshtrust"])))
}

/// `helm install|upgrade meshtrust-agent` exactly as the README says (OpenBao's private CA comes in the mesh
/// file's `openbao.caCert`), plus `extra` arguments.
fn helm_install(mesh: &Mesh, cluster: usize, verb: &str, extra: &[&str]) {
    let name = &mesh.env.clusters[cluster].name;
    let mut cmd = helm(mesh, cluster);
    cmd.args([verb, "meshtrust-agent"])
        .arg(repo().join("charts/meshtrust-agent"))
        .args(["-n", NS, "--create-namespace", "--wait", "--timeout", "3m"])
        .args(["--set", &format!("cluster={name}")])
        .arg("--set-file")
        .arg(format!("mesh={}", mesh.file.display()))
        .args(extra);
    run(cmd);
}

async fn pods(mesh: &Mesh, cluster: usize) -> Vec<Pod> {
    let client = mesh.env.clusters[cluster].client().await.expect("client");
    Api::<Pod>::namespaced(client, NS)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .expect("list pods")
        .items
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn lease_holder(mesh: &Mesh, cluster: usize) -> Option<String> {
    let client = mesh.env.clusters[cluster].client().await.expect("client");
    let lease = Api::<Lease>::namespaced(client, NS)
        .get_opt("meshtrust-agent")
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits until `check` holds, or fails with `what` after `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The helm install line of the README in both clusters, after `apply --openbao-only`; then everything a
/// user sees of the agent running as pods, with the process checked from the host as the kernel runs it;
/// istiod as pods beside them; last `helm upgrade` and `helm uninstall`. One environment for all of it.
#[tokio::test(flavor = "multi_thread")]
async fn chart_installs_agents_that_run_the_mesh_as_pods() {
    let pilot = pilot_image();
    let mesh = mesh_with_nodes(2, &[image(), &pilot]);
    mesh.rewrite(ROTATION);
    mesh.json(&["apply", "--openbao-only"]);
    for i in 0..2 {
        helm_install(&mesh, i, "install", &[]);
    }
    for i in 0..2 {
        let ready = pods(&mesh, i).await.iter().filter(|p| is_ready(p)).count();
        assert_eq!(ready, 2, "both replicas Ready in cluster {i} after --wait");
        let holder = lease_holder(&mesh, i).await.expect("a Lease holder");
        let names: Vec<String> = pods(&mesh, i)
            .await
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert!(
            names.contains(&holder),
            "the Lease is held by one of the pods: {holder} in {names:?}"
        );
    }
    eventually(
        90,
        "meshtrust verify passes with the agents as pods",
        || async { mesh.meshtrust(&["verify"]).status.success() },
    )
    .await;
    for i in 0..2 {
        let peer = &mesh.env.clusters[1 - i].name;
        assert!(mesh.secret(i, NS, "cacerts").await.is_some());
        let remote = format!("istio-remote-secret-{peer}");
        assert!(mesh.secret(i, NS, &remote).await.is_some(), "{remote}");
    }
    // kubectl port-forward to the pod's port: API server -> kubelet -> containerd -> the pod's netns.
    let pod = pods(&mesh, 0).await[0].metadata.name.clone().expect("name");
    let metrics = tokio::task::block_in_place(|| {
        port_forward_get(&mesh, 0, NS, &format!("pod/{pod}"), 8080, "/metrics")
    });
    assert!(metrics.contains("meshtrust_"), "/metrics: {metrics}");
    logs_are_json(&mesh).await;
    security_context_holds_at_runtime(&mesh).await;
    istiod_runs_as_a_pod_through_a_renewal_and_a_rotation(&mesh).await;
    upgrade_rolls_and_uninstall_keeps_secrets(&mesh).await;
}

/// istiod as a pod in both clusters (`scripts/dev-env istio`): the CA the kubelet mounted from `cacerts`, the
/// peer read through meshtrust's remote secret; then, sampled every 200 ms (each istiod pod's workload
/// certificate against the other cluster's `istio-ca-root-cert`), an admin's renewal and a root rotation that
/// the agent pods carry through its phases. Prints the timeline.
async fn istiod_runs_as_a_pod_through_a_renewal_and_a_rotation(mesh: &Mesh) {
    let took = tokio::task::block_in_place(|| pod_istiod::install(mesh));
    eprintln!(
        "scripts/dev-env istio: istiod Ready as a pod in both clusters in {:.1}s",
        took.as_secs_f64()
    );
    for i in 0..2 {
        pod_istiod::uses_the_mesh_root(mesh, i).await;
    }
    pod_istiod::reads_its_peer(mesh, 1).await;
    let clusters = &mesh.env.clusters;
    for cluster in clusters {
        workload_identity(cluster).await;
    }
    let istiods = [PodIstiod, PodIstiod];
    let mut sampler = Sampler::default();
    sampler
        .until(clusters, &istiods, Duration::from_secs(60), settled_on(1))
        .await;
    // Only the moves count: before istiod wrote the new namespace's ConfigMap there was nothing to verify.
    sampler.gaps.clear();

    // A renewal: the admin with a mesh file that wants one now. istiod signs with the new intermediate once
    // the kubelet has brought the changed Secret into its pod.
    mesh.rewrite(&ROTATION.replace("renewBefore: 10m", "renewBefore: 1h59m55s"));
    let renewed = mesh.ok(&["apply", "--only", "ca"]);
    mesh.rewrite(ROTATION);
    assert!(renewed.contains("intermediate serial"), "{renewed}");
    sampler.note("admin renewed both intermediates");
    signs_with_current_intermediate(mesh, &istiods, &mut sampler).await;

    mesh.ok(&["ca", "rotate-root", "--start"]);
    sampler.note("rotate-root --start: root 2 created; the agent pods carry the phases");
    sampler
        .until(clusters, &istiods, Duration::from_secs(240), settled_on(2))
        .await;
    sampler.report(sampler.started);
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);
}

/// Samples until each istiod pod's workload certificates are issued by the intermediate now in its `cacerts`;
/// notes when each got there.
async fn signs_with_current_intermediate(
    mesh: &Mesh,
    istiods: &[PodIstiod],
    sampler: &mut Sampler,
) {
    let clusters = &mesh.env.clusters;
    let mut pending: Vec<usize> = (0..clusters.len()).collect();
    let start = Instant::now();
    while !pending.is_empty() {
        sampler.sample(clusters, istiods).await;
        let mut still = Vec::new();
        for i in pending {
            let intermediate = support::field(&mesh.cacerts(i).await, "ca-cert.pem");
            let roots = support::field(&mesh.cacerts(i).await, "root-cert.pem");
            let chain = istiods[i]
                .workload_certificate(&clusters[i], support::istio::WORKLOADS, "app", &roots)
                .await
                .map(|c| c.iter().flat_map(|p| pem_certs(p)).collect::<Vec<_>>())
                .unwrap_or_default();
            if chain.get(1).map(|c| c.trim()) == Some(intermediate.trim()) {
                sampler.note(&format!(
                    "{}'s istiod signs with the renewed intermediate",
                    clusters[i].name
                ));
            } else {
                still.push(i);
            }
        }
        pending = still;
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "istiod pods {pending:?} still sign with the old intermediate; timeline: {:#?}",
            sampler.timeline
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl logs` (API server -> kubelet -> containerd's log file) shows the agent's JSON lines.
async fn logs_are_json(mesh: &Mesh) {
    let pod = pods(mesh, 0).await[0].metadata.name.clone().expect("name");
    let logs = run({
        let mut c = kubectl(mesh, 0);
        c.args(["-n", NS, "logs", &pod]);
        c
    });
    let line = logs.lines().next().expect("the agent logged something");
    serde_json::from_str::<serde_json::Value>(line)
        .unwrap_or_else(|e| panic!("log line is JSON ({e}): {line}"));
}

/// The chart's securityContext as the kernel applies it: the agent process (found in the host's /proc, as
/// the node's pid namespace is a child of the host's) runs as 65532 with no capability, no_new_privs set,
/// and its root filesystem mounted read-only.
async fn security_context_holds_at_runtime(mesh: &Mesh) {
    let cluster = &mesh.env.clusters[0].name;
    let node = mesh.env.node(cluster).expect("node");
    let pids = agent_processes(cluster, node.cgroup_root());
    assert_eq!(
        pids.len(),
        2,
        "two agent processes of {cluster} on its node"
    );
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(field("Uid"), "65532 65532 65532 65532", "non-root");
        assert_eq!(field("Gid"), "65532 65532 65532 65532", "non-root group");
        assert_eq!(field("NoNewPrivs"), "1", "no privilege escalation");
        for caps in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                field(caps),
                "0000000000000000",
                "{caps}: every capability dropped"
            );
        }
        assert_eq!(
            field("Seccomp"),
            "2",
            "the runtime's default seccomp filter"
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .expect("a root mount");
        let options = root.split_whitespace().nth(5).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "read-only root filesystem: {root}"
        );
    }
}

/// PIDs (in the host's pid namespace) of `meshtrust agent --cluster <cluster>` processes in the node whose
/// kubelet uses `cgroup_root` (another environment's node may run agents for a cluster of the same name).
fn agent_processes(cluster: &str, cgroup_root: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_agent = args.first().is_some_and(|a| a.ends_with("/meshtrust"))
            && args.get(1).is_some_and(|a| a == "agent")
            && args
                .windows(2)
                .any(|w| w[0] == "--cluster" && w[1] == cluster);
        let on_node = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains(&format!("/{cgroup_root}/")));
        if is_agent && on_node {
            pids.push(pid);
        }
    }
    pids
}

/// `helm upgrade` with changed values rolls the pods (text logs, OpenBao's CA from the chart's own value);
/// `helm uninstall` removes the chart's
/// objects and leaves the agents' work (`cacerts`, remote secrets) in place.
async fn upgrade_rolls_and_uninstall_keeps_secrets(mesh: &Mesh) {
    // The chart's own CA value too: BAO_CACERT from ConfigMap meshtrust-openbao-ca wins over the mesh file's.
    let ca = format!(
        "openbao.caCert={}",
        mesh.env.dir().join("openbao-ca.pem").display()
    );
    helm_install(
        mesh,
        0,
        "upgrade",
        &["--set", "logFormat=text", "--set-file", &ca],
    );
    let pods_now = pods(mesh, 0).await;
    let running: Vec<&Pod> = pods_now.iter().filter(|p| is_ready(p)).collect();
    assert_eq!(running.len(), 2, "two Ready pods after the upgrade");
    for pod in running {
        let args = pod.spec.as_ref().expect("spec").containers[0]
            .args
            .clone()
            .unwrap_or_default();
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--log-format" && w[1] == "text"),
            "{args:?}"
        );
    }
    run({
        let mut c = helm(mesh, 0);
        c.args(["uninstall", "meshtrust-agent", "-n", NS, "--wait"]);
        c
    });
    let client = mesh.env.clusters[0].client().await.expect("client");
    let deployment = Api::<Deployment>::namespaced(client, NS)
        .get_opt("meshtrust-agent")
        .await
        .expect("get deployment");
    assert!(deployment.is_none(), "uninstall removed the Deployment");
    let peer = &mesh.env.clusters[1].name;
    assert!(
        mesh.secret(0, NS, "cacerts").await.is_some(),
        "cacerts stays"
    );
    let remote = format!("istio-remote-secret-{peer}");
    assert!(
        mesh.secret(0, NS, &remote).await.is_some(),
        "{remote} stays"
    );
}

/// Every Raft node's TLS address, as pods reach them.
fn openbao_nodes(mesh: &Mesh) -> Vec<String> {
    mesh.env.bao_ha.as_ref().expect("HA OpenBao").tls_addrs()
}

/// The deploy files of `meshtrust render agent` with OpenBao's CA (`--openbao-cacert`) and every Raft node
/// (`--openbao-addr`, repeated), applied with kubectl as an operator would.
fn deploy_rendered_agent(mesh: &Mesh, cluster: usize) {
    let name = mesh.env.clusters[cluster].name.clone();
    let ca = mesh.env.dir().join("openbao-ca.pem");
    let mut args = vec![
        "render".to_string(),
        "agent".to_string(),
        "--cluster".to_string(),
        name.clone(),
        "--openbao-cacert".to_string(),
        ca.display().to_string(),
    ];
    for node in openbao_nodes(mesh) {
        args.extend(["--openbao-addr".to_string(), node]);
    }
    let rendered = mesh.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let file = mesh.env.dir().join(format!("agent-{name}.yaml"));
    std::fs::write(&file, rendered).expect("write rendered agent");
    run({
        let mut c = kubectl(mesh, cluster);
        c.args(["create", "namespace", NS]);
        c
    });
    run({
        let mut c = kubectl(mesh, cluster);
        c.args(["apply", "-f"]).arg(&file);
        c
    });
}

/// OpenBao as users run it for the agent pods: a 3-node Raft cluster over TLS with a private CA. cluster-a's
/// agents come from the chart (`openbao.addresses` lists the nodes), cluster-b's from `render agent` with
/// BAO_CACERT and BAO_ADDRS. First the leader pod is deleted `MESHTRUST_NODE_KILLS` times (10): the other
/// replica takes the Lease and repairs a remote secret deleted meanwhile; takeover times printed. Then the
/// Raft leader is killed: the agents carry on through the new leader (a deleted `cacerts` re-issued, which
/// needs OpenBao to sign, and a deleted remote secret restored in each cluster).
#[test]
fn agent_pods_survive_their_leader_pod_and_the_openbao_raft_leader() {
    // MESHTRUST_NODE_KILLS: more kills for a steadier p99 (10 take about 25 s here).
    let kills: usize = std::env::var("MESHTRUST_NODE_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10);
    // The Raft cluster's setup blocks: start it before the runtime, on this thread (pdeathsig follows it).
    let mut mesh = mesh_with_nodes_and_openbao_ha(2, &[image()]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    mesh.json(&["apply", "--openbao-only"]);
    let addresses = format!("openbao.addresses={{{}}}", openbao_nodes(&mesh).join(","));
    helm_install(&mesh, 0, "install", &["--set", &addresses]);
    deploy_rendered_agent(&mesh, 1);
    runtime.block_on(async {
        eventually(90, "verify passes", || async {
            mesh.meshtrust(&["verify"]).status.success()
        })
        .await;
        leader_pod_deletions(&mesh, kills).await;
    });
    openbao_raft_leader_killed(&mut mesh, &runtime);
    drop(runtime);
}

/// Deletes the leader pod of cluster-a `kills` times; prints the takeover times (deletion to a new holder).
async fn leader_pod_deletions(mesh: &Mesh, kills: usize) {
    let client = mesh.env.clusters[0].client().await.expect("client");
    let pods_api = Api::<Pod>::namespaced(client.clone(), NS);
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS);
    let remote = format!("istio-remote-secret-{}", mesh.env.clusters[1].name);
    let mut takeovers = Vec::with_capacity(kills);
    for kill in 0..kills {
        let round = Instant::now();
        eventually(120, "two Ready replicas before a kill", || async {
            pods(mesh, 0).await.iter().filter(|p| is_ready(p)).count() == 2
        })
        .await;
        let leader = lease_holder(mesh, 0).await.expect("a leader");
        secrets
            .delete(&remote, &DeleteParams::default())
            .await
            .expect("delete the remote secret");
        let start = Instant::now();
        pods_api
            .delete(&leader, &DeleteParams::default())
            .await
            .expect("delete the leader pod");
        while lease_holder(mesh, 0).await.is_none_or(|h| h == leader) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "kill {kill}: no other pod took the Lease within 60s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        takeovers.push(start.elapsed());
        eventually(60, &format!("kill {kill}: {remote} repaired"), || async {
            mesh.secret(0, NS, &remote).await.is_some()
        })
        .await;
        eprintln!(
            "kill {kill}: takeover {:.2}s, repaired {:.2}s after the kill, round {:.2}s",
            takeovers[kill].as_secs_f64(),
            start.elapsed().as_secs_f64(),
            round.elapsed().as_secs_f64()
        );
    }
    takeovers.sort();
    let pick = |q: f64| takeovers[((takeovers.len() - 1) as f64 * q).round() as usize];
    println!("| leader pod deleted ({kills} kills) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| new Lease holder after | {:.2} s | {:.2} s | {:.2} s |",
        pick(0.5).as_secs_f64(),
        pick(0.99).as_secs_f64(),
        takeovers[kills - 1].as_secs_f64()
    );
}

/// SIGKILLs the Raft leader with the agent pods running, then deletes `cacerts` in cluster-b and a remote
/// secret in each cluster: the agents re-issue and restore them through the new leader. Prints the times.
fn openbao_raft_leader_killed(mesh: &mut Mesh, runtime: &tokio::runtime::Runtime) {
    let ha = mesh.env.bao_ha.as_ref().expect("HA OpenBao");
    // A node that joined moments ago may not vote yet: killing the leader then leaves no quorum.
    ha.wait_for_voters(Duration::from_secs(60))
        .expect("every node votes");
    let leader = ha.wait_for_leader(Duration::from_secs(30)).expect("leader");
    let old_intermediate =
        runtime.block_on(async { support::field(&mesh.cacerts(1).await, "ca-cert.pem") });
    let killed = Instant::now();
    mesh.env.bao_ha.as_mut().expect("HA").kill(leader);
    let ha = mesh.env.bao_ha.as_ref().expect("HA");
    let new_leader = ha
        .wait_for_leader(Duration::from_secs(30))
        .expect("a new leader");
    let elected = killed.elapsed();
    runtime.block_on(async {
        let client = mesh.env.clusters[1].client().await.expect("client");
        let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS);
        secrets
            .delete("cacerts", &DeleteParams::default())
            .await
            .expect("delete cacerts");
        for i in 0..2 {
            let remote = format!("istio-remote-secret-{}", mesh.env.clusters[1 - i].name);
            let client = mesh.env.clusters[i].client().await.expect("client");
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS)
                .delete(&remote, &DeleteParams::default())
                .await
                .expect("delete the remote secret");
        }
        eventually(90, "cacerts re-issued through the new leader", || async {
            mesh.secret(1, NS, "cacerts")
                .await
                .is_some_and(|s| support::field(&s, "ca-cert.pem") != old_intermediate)
        })
        .await;
        let reissued = killed.elapsed();
        eventually(60, "both remote secrets restored", || async {
            mesh.secret(0, NS, &format!("istio-remote-secret-{}", mesh.env.clusters[1].name))
                .await
                .is_some()
                && mesh
                    .secret(1, NS, &format!("istio-remote-secret-{}", mesh.env.clusters[0].name))
                    .await
                    .is_some()
        })
        .await;
        eprintln!(
            "Raft leader node {} killed: node {} elected after {:.2}s; cacerts re-issued {:.2}s and both remote secrets restored {:.2}s after the kill",
            leader + 1,
            new_leader + 1,
            elected.as_secs_f64(),
            reissued.as_secs_f64(),
            killed.elapsed().as_secs_f64()
        );
        eventually(90, "verify passes after the leader kill", || async {
            mesh.meshtrust(&["verify"]).status.success()
        })
        .await;
    });
}

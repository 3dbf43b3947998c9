//! A root rotation carried by agents alone, with a real istiod per cluster (ISTIO_MULTIROOT_MESH=true), a real
//! OpenBao and real API servers. `ca rotate-root --start` only creates the new root; the two agents move the
//! mesh through the phases on each other's published trust facts. Sampled every 200 ms for the whole rotation,
//! every istiod's current workload certificate verifies against every other cluster's `istio-ca-root-cert`.
//! Then a second rotation with one agent stopped: the other waits for it.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshtrust_testenv::{Istiod, IstiodOptions};
use support::Mesh;
use support::istio::workload_identity;
use support::trust_sampler::{Sampler, cacerts_label, settled_on};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent process for cluster `index`, polling every second.
fn start_agent(mesh: &Mesh, index: usize) -> Agent {
    let cluster = &mesh.env.clusters[index];
    let log = std::fs::File::create(mesh.env.dir().join(format!("agent-{}.log", cluster.name)))
        .expect("agent log");
    let child = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["agent", "--cluster", &cluster.name, "--token-request"])
        .args(["--poll-interval", "1s", "--listen", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .arg("--mesh")
        .arg(&mesh.file)
        .args(["--log-format", "json", "-v"])
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start agent");
    Agent(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_alone_rotate_the_root_with_no_trust_gap_and_wait_for_a_stopped_peer() {
    let test_start = Instant::now();
    let mesh = Mesh::start(2, "ca:\n  rootRotation:\n    phaseDwell: 5s\n");
    mesh.ok(&["apply"]);
    let mut istiods = Vec::new();
    for cluster in &mesh.env.clusters {
        workload_identity(cluster).await;
        cluster
            .create_login_service_account("istio-system", "meshtrust-agent")
            .await
            .expect("agent identity");
        istiods.push(
            Istiod::start(cluster, mesh.env.dir(), &IstiodOptions { multiroot: true })
                .await
                .expect("istiod starts"),
        );
    }
    let mut agents = vec![Some(start_agent(&mesh, 0)), Some(start_agent(&mesh, 1))];
    let mut sampler = Sampler::default();
    let clusters = &mesh.env.clusters;
    sampler
        .until(clusters, &istiods, Duration::from_secs(60), settled_on(1))
        .await;
    // Only the rotation counts: before istiod wrote its ConfigMaps there was nothing to verify against.
    sampler.gaps.clear();

    // Rotation 1: the admin only creates root 2; the agents do the rest.
    let out = mesh.ok(&["ca", "rotate-root", "--start"]);
    eprintln!("{out}");
    sampler.note("rotate-root --start: root 2 created");
    sampler
        .until(clusters, &istiods, Duration::from_secs(120), settled_on(2))
        .await;
    let status = mesh.ok(&["status"]);
    assert!(status.contains("Settled"), "{status}");

    // Rotation 2 with cluster-b's agent stopped: cluster-a trusts root 3 and goes no further.
    agents[1] = None;
    mesh.ok(&["ca", "rotate-root", "--start"]);
    sampler.note("rotate-root --start: root 3 created, cluster-b's agent stopped");
    let stopped_at = Instant::now();
    while stopped_at.elapsed() < Duration::from_secs(15) {
        sampler.sample(clusters, &istiods).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cacerts_label(&clusters[0]).await,
        (vec![2, 3], 2),
        "cluster-a waits in phase 1"
    );
    assert_eq!(
        cacerts_label(&clusters[1]).await,
        (vec![2], 2),
        "cluster-b untouched"
    );
    let status = mesh.ok(&["status"]);
    assert!(
        status.contains("cluster-b does not trust meshtrust-root-3 yet"),
        "{status}"
    );
    agents[1] = Some(start_agent(&mesh, 1));
    sampler.note("cluster-b's agent restarted");
    sampler
        .until(clusters, &istiods, Duration::from_secs(120), settled_on(3))
        .await;

    sampler.report(test_start);
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);
    drop(agents);
}

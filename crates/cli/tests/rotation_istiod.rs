//! A root rotation carried by agents alone, with a real istiod per cluster (ISTIO_MULTIROOT_MESH=true), a real
//! OpenBao and real API servers. `ca rotate-root --start` only creates the new root; the two agents move the
//! mesh through the phases on each other's published trust facts. Sampled every 200 ms for the whole rotation,
//! every istiod's current workload certificate verifies against every other cluster's `istio-ca-root-cert`.
//! Then a second rotation with one agent stopped: the other waits for it.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use meshtrust_core::secret::SecretBytes;
use meshtrust_testenv::{Istiod, IstiodOptions, TestCluster};
use support::Mesh;
use support::istio::{WORKLOADS, openssl_verifies, pem_certs, workload_identity};

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

async fn served_roots(cluster: &TestCluster) -> Option<String> {
    let client = cluster.client().await.ok()?;
    let cm = Api::<ConfigMap>::namespaced(client, WORKLOADS)
        .get_opt("istio-ca-root-cert")
        .await
        .ok()??;
    cm.data?.get("root-cert.pem").cloned()
}

/// The root generations a PEM bundle holds, from the roots' CNs (`... G2` for generation 2).
fn generations(pem: &str) -> Vec<u32> {
    let mut out: Vec<u32> = meshtrust_pki::parse_certs(pem, "roots")
        .map(|certs| {
            certs
                .iter()
                .map(|c| generation(&c.facts.subject_cn))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn generation(cn: &str) -> u32 {
    cn.rsplit_once(" G")
        .and_then(|(_, g)| g.parse().ok())
        .unwrap_or(1)
}

/// One cluster's `cacerts` as "trust [1, 2] sign 1".
async fn cacerts_label(mesh: &Mesh, index: usize) -> (Vec<u32>, u32) {
    let secret = mesh.cacerts(index).await;
    let data: BTreeMap<String, SecretBytes> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                SecretBytes::new(String::from_utf8_lossy(&v.0).to_string()),
            )
        })
        .collect();
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| v.expose_str())
            .unwrap_or("")
            .to_string()
    };
    let roots = text("root-cert.pem");
    let state = meshtrust_pki::cacerts::inspect(&data, 0);
    let signer = meshtrust_pki::parse_certs(&roots, "roots")
        .ok()
        .and_then(|certs| {
            certs
                .into_iter()
                .find(|c| Some(&c.facts.fingerprint) == state.issuer_fingerprint.as_ref())
        })
        .map_or(0, |c| generation(&c.facts.subject_cn));
    (generations(&roots), signer)
}

/// Each cluster's `cacerts` as (trusted generations, signing generation).
type CacertsStates = [(Vec<u32>, u32)];

struct Sampler {
    started: Instant,
    samples: usize,
    checks: usize,
    gaps: Vec<String>,
    timeline: Vec<(f64, String)>,
    /// Every root seen, to reach each istiod over TLS whatever it serves with.
    all_roots: String,
}

impl Sampler {
    /// One sample: each istiod's current workload certificate against every other cluster's served roots.
    async fn sample(&mut self, mesh: &Mesh, istiods: &[Istiod]) {
        let clusters = &mesh.env.clusters;
        let mut served = Vec::new();
        for c in clusters {
            served.push(served_roots(c).await.unwrap_or_default());
        }
        for s in &served {
            for cert in pem_certs(s) {
                if !self.all_roots.contains(&cert) {
                    self.all_roots.push_str(&cert);
                }
            }
        }
        let mut label = Vec::new();
        for (i, istiod) in istiods.iter().enumerate() {
            let (trust, sign) = cacerts_label(mesh, i).await;
            label.push(format!(
                "{}: cacerts trust {trust:?} sign {sign}, istiod serves {:?}",
                clusters[i].name,
                generations(&served[i])
            ));
            let chain = match istiod
                .workload_certificate(&clusters[i], WORKLOADS, "app", &self.all_roots)
                .await
            {
                Ok(chain) => chain,
                Err(e) => {
                    self.gaps.push(format!(
                        "{}: no workload certificate: {e}",
                        clusters[i].name
                    ));
                    continue;
                }
            };
            for (j, roots) in served.iter().enumerate() {
                if i == j {
                    continue;
                }
                self.checks += 1;
                if let Err(e) = openssl_verifies(&chain, roots) {
                    self.gaps.push(format!(
                        "{:.1}s: {}'s workload certificate does not verify with {}'s istio-ca-root-cert: {e}",
                        self.started.elapsed().as_secs_f64(),
                        clusters[i].name,
                        clusters[j].name
                    ));
                }
            }
        }
        self.samples += 1;
        let label = label.join("; ");
        if self.timeline.last().is_none_or(|(_, l)| *l != label) {
            let t = self.started.elapsed().as_secs_f64();
            eprintln!("[{t:6.1}s] {label}");
            self.timeline.push((t, label));
        }
    }

    /// Samples every 200 ms until `done` holds for a sample, or fails after `limit`.
    async fn until(
        &mut self,
        mesh: &Mesh,
        istiods: &[Istiod],
        limit: Duration,
        done: impl Fn(&CacertsStates, &[Vec<u32>]) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let tick = Instant::now();
            self.sample(mesh, istiods).await;
            let mut states = Vec::new();
            let mut served = Vec::new();
            for (i, c) in mesh.env.clusters.iter().enumerate() {
                states.push(cacerts_label(mesh, i).await);
                served.push(generations(&served_roots(c).await.unwrap_or_default()));
            }
            if done(&states, &served) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "not reached within {limit:?}; timeline: {:#?}",
                self.timeline
            );
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
        }
    }
}

fn settled_on(generation: u32) -> impl Fn(&CacertsStates, &[Vec<u32>]) -> bool {
    move |states, served| {
        states
            .iter()
            .all(|(t, s)| *t == [generation] && *s == generation)
            && served.iter().all(|s| *s == [generation])
    }
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
    let mut sampler = Sampler {
        started: Instant::now(),
        samples: 0,
        checks: 0,
        gaps: vec![],
        timeline: vec![],
        all_roots: String::new(),
    };
    sampler
        .until(&mesh, &istiods, Duration::from_secs(60), settled_on(1))
        .await;
    // Only the rotation counts: before istiod wrote its ConfigMaps there was nothing to verify against.
    sampler.gaps.clear();

    // Rotation 1: the admin only creates root 2; the agents do the rest.
    let out = mesh.ok(&["ca", "rotate-root", "--start"]);
    eprintln!("{out}");
    sampler.timeline.push((
        sampler.started.elapsed().as_secs_f64(),
        "rotate-root --start: root 2 created".into(),
    ));
    sampler
        .until(&mesh, &istiods, Duration::from_secs(120), settled_on(2))
        .await;
    let status = mesh.ok(&["status"]);
    assert!(status.contains("Settled"), "{status}");

    // Rotation 2 with cluster-b's agent stopped: cluster-a trusts root 3 and goes no further.
    agents[1] = None;
    mesh.ok(&["ca", "rotate-root", "--start"]);
    sampler.timeline.push((
        sampler.started.elapsed().as_secs_f64(),
        "rotate-root --start: root 3 created, cluster-b's agent stopped".into(),
    ));
    let stopped_at = Instant::now();
    while stopped_at.elapsed() < Duration::from_secs(15) {
        sampler.sample(&mesh, &istiods).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cacerts_label(&mesh, 0).await,
        (vec![2, 3], 2),
        "cluster-a waits in phase 1"
    );
    assert_eq!(
        cacerts_label(&mesh, 1).await,
        (vec![2], 2),
        "cluster-b untouched"
    );
    let status = mesh.ok(&["status"]);
    assert!(
        status.contains("cluster-b does not trust meshtrust-root-3 yet"),
        "{status}"
    );
    agents[1] = Some(start_agent(&mesh, 1));
    sampler.timeline.push((
        sampler.started.elapsed().as_secs_f64(),
        "cluster-b's agent restarted".into(),
    ));
    sampler
        .until(&mesh, &istiods, Duration::from_secs(120), settled_on(3))
        .await;

    eprintln!("timeline:");
    for (t, label) in &sampler.timeline {
        eprintln!("  {t:6.1}s  {label}");
    }
    eprintln!(
        "{} samples, {} cross-cluster checks, {} gaps; test took {:.1}s",
        sampler.samples,
        sampler.checks,
        sampler.gaps.len(),
        test_start.elapsed().as_secs_f64()
    );
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);
    drop(agents);
}

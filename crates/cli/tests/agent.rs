//! The agent as a separate process against the real OpenBao and API servers: it logs in with its own
//! ServiceAccount through the cluster's Kubernetes auth mount, repairs drift from a watch, follows OpenBao by
//! polling, serves health and metrics, and stops on SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use support::agent::{Agent, agent_identity, http_get, start_agent, start_agent_with};
use support::{Mesh, field};

async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not repaired within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_repairs_drift_at_once_and_follows_openbao() {
    let mesh = Mesh::start(2, "");
    mesh.ok(&["apply"]);
    agent_identity(&mesh, 0).await;
    let mut agent = start_agent(&mesh, 0);
    let secrets: Api<Secret> = Api::namespaced(
        mesh.env.clusters[0].client().await.expect("client"),
        "istio-system",
    );

    // A deleted remote secret comes back.
    secrets
        .delete("istio-remote-secret-cluster-b", &DeleteParams::default())
        .await
        .expect("delete");
    let took = wait_for(Duration::from_secs(5), || async {
        secrets
            .get_opt("istio-remote-secret-cluster-b")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    eprintln!("deleted remote secret restored in {took:?}");
    assert!(took < Duration::from_secs(1), "restored in {took:?}");

    // An edited cacerts comes back.
    let original = field(
        &secrets.get("cacerts").await.expect("cacerts"),
        "root-cert.pem",
    );
    let mut edited = secrets.get("cacerts").await.expect("cacerts");
    edited
        .data
        .as_mut()
        .expect("data")
        .insert("root-cert.pem".into(), ByteString(b"tampered\n".to_vec()));
    secrets
        .replace("cacerts", &PostParams::default(), &edited)
        .await
        .expect("edit");
    let took = wait_for(Duration::from_secs(5), || async {
        secrets
            .get("cacerts")
            .await
            .map(|s| field(&s, "root-cert.pem") == original)
            .unwrap_or(false)
    })
    .await;
    eprintln!("edited cacerts restored in {took:?}");
    assert!(took < Duration::from_secs(1), "restored in {took:?}");

    // A change published for cluster-b reaches cluster-a within the poll interval (1 s here).
    let kubeconfig = mesh.bao(&[
        "kv",
        "get",
        "-field=cluster-b",
        "secret/istio/remote-secrets/cluster-b",
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("kc");
    std::fs::write(
        &file,
        kubeconfig.trim_end_matches('\n').to_string() + "\n# republished\n",
    )
    .expect("write");
    // As cluster-b's agent publishes: a new version of its own entry, then a bump of the change marker.
    mesh.bao(&[
        "kv",
        "patch",
        "secret/istio/remote-secrets/cluster-b",
        &format!("cluster-b=@{}", file.display()),
    ]);
    mesh.bao(&[
        "kv",
        "put",
        "secret/istio/meshtrust-index",
        "cluster=cluster-b",
    ]);
    let took = wait_for(Duration::from_secs(5), || async {
        secrets
            .get("istio-remote-secret-cluster-b")
            .await
            .map(|s| {
                s.metadata
                    .annotations
                    .unwrap_or_default()
                    .get("meshtrust.dev/kv-version")
                    .map(String::as_str)
                    == Some("2")
            })
            .unwrap_or(false)
    })
    .await;
    eprintln!("cluster-b's new version reached cluster-a in {took:?}");
    assert!(
        field(
            &secrets
                .get("istio-remote-secret-cluster-b")
                .await
                .expect("secret"),
            "cluster-b"
        )
        .ends_with("# republished\n")
    );

    // Operations: metrics and readiness.
    let (status, metrics) = http_get(agent.port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("meshtrust_reconciles_total ")
            && metrics
                .contains("meshtrust_certificate_expiry_timestamp_seconds{secret=\"cacerts\"}")
            && metrics.contains(
                "meshtrust_certificate_expiry_timestamp_seconds{secret=\"cacerts/root\"}"
            ),
        "{metrics}"
    );
    assert_eq!(http_get(agent.port, "/healthz").map(|r| r.0), Some(200));

    // SIGTERM: a prompt, clean exit.
    let pid = agent.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the agent must stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut pipe) = agent.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "JSON logs"
    );
    assert!(
        !stderr.contains("PRIVATE KEY") && !stderr.contains("token: "),
        "no key material or tokens in logs"
    );
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_writes_and_the_other_takes_over() {
    let mesh = Mesh::start(1, "");
    mesh.ok(&["apply"]);
    agent_identity(&mesh, 0).await;
    let first = start_agent(&mesh, 0);
    let second = start_agent(&mesh, 0);
    let secrets: Api<Secret> = Api::namespaced(
        mesh.env.clusters[0].client().await.expect("client"),
        "istio-system",
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leaders: Vec<f64> = [&first, &second]
        .iter()
        .map(|a| metric(a.port, "meshtrust_leader").unwrap_or(-1.0))
        .collect();
    assert_eq!(
        leaders.iter().sum::<f64>(),
        1.0,
        "exactly one leader: {leaders:?}"
    );
    let (mut leader, follower) = if leaders[0] == 1.0 {
        (first, second)
    } else {
        (second, first)
    };

    let cacerts_rv = secrets
        .get("cacerts")
        .await
        .expect("cacerts")
        .metadata
        .resource_version;
    secrets
        .delete("cacerts", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(Duration::from_secs(5), || async {
        secrets.get_opt("cacerts").await.ok().flatten().is_some()
    })
    .await;
    assert_ne!(
        secrets
            .get("cacerts")
            .await
            .expect("cacerts")
            .metadata
            .resource_version,
        cacerts_rv
    );
    // Metrics are updated when the round ends, a moment after the write.
    wait_for(Duration::from_secs(3), || async {
        metric(leader.port, "meshtrust_writes_total").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert_eq!(
        metric(follower.port, "meshtrust_writes_total"),
        Some(0.0),
        "the follower wrote nothing"
    );

    // The leader dies without handing the Lease back: the follower takes over once it expires.
    leader.child.kill().expect("kill");
    let _ = leader.child.wait();
    let start = Instant::now();
    while metric(follower.port, "meshtrust_leader") != Some(1.0) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the follower must take over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("takeover after {:?}", start.elapsed());
    secrets
        .delete("istio-remote-secret-cluster-b", &DeleteParams::default())
        .await
        .ok();
    secrets
        .delete("cacerts", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(Duration::from_secs(5), || async {
        secrets.get_opt("cacerts").await.ok().flatten().is_some()
    })
    .await;
    wait_for(Duration::from_secs(3), || async {
        metric(follower.port, "meshtrust_writes_total").unwrap_or(0.0) >= 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openbao_outage_deletes_nothing_shows_in_readiness_and_heals_within_a_poll() {
    let mut mesh = Mesh::start_persistent(2, "");
    mesh.ok(&["apply"]);
    agent_identity(&mesh, 0).await;
    let agent = start_agent_with(&mesh, 0, &mesh.file, &["--openbao-timeout", "2s"]);
    let secrets: Api<Secret> = Api::namespaced(
        mesh.env.clusters[0].client().await.expect("client"),
        "istio-system",
    );
    let names = || async {
        let mut n: Vec<String> = secrets
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        n.sort();
        n
    };
    let before = names().await;

    // OpenBao is stopped for 30 s (file storage: it comes back with its state, sealed, and is unsealed).
    mesh.env.bao.stop();
    let start = Instant::now();
    while http_get(agent.port, "/readyz").map(|r| r.0) != Some(503) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "/readyz must report the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("/readyz reported the outage after {:?}", start.elapsed());
    // Drift during the outage cannot be repaired (the kubeconfig lives in OpenBao), and nothing is deleted.
    secrets
        .delete("istio-remote-secret-cluster-b", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(start.elapsed())).await;
    let mut expected = before.clone();
    expected.retain(|n| n != "istio-remote-secret-cluster-b");
    assert_eq!(
        names().await,
        expected,
        "the agent deleted nothing while OpenBao was down"
    );

    mesh.env
        .bao
        .restart()
        .expect("OpenBao restarts with its state");
    let resumed = Instant::now();
    wait_for(Duration::from_secs(20), || async {
        secrets
            .get_opt("istio-remote-secret-cluster-b")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    while http_get(agent.port, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "ready again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("in sync {:?} after OpenBao came back", resumed.elapsed());
    assert_eq!(names().await, before);
    assert!(
        mesh.json(&["plan"])["changes"]
            .as_array()
            .expect("changes")
            .is_empty(),
        "in sync"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The agent's resident memory at idle, synced with 2 and with 100 peers (simulated in OpenBao).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_memory_at_idle_with_2_and_100_peers() {
    let mut results = Vec::new();
    for peers in [2usize, 100] {
        let mesh = Mesh::start(1, "");
        let file = support::mesh_with_simulated_peers(&mesh, peers).await;
        agent_identity(&mesh, 0).await;
        let agent = start_agent_with(&mesh, 0, &file, &[]);
        let secrets: Api<Secret> = Api::namespaced(
            mesh.env.clusters[0].client().await.expect("client"),
            "istio-system",
        );
        wait_for(Duration::from_secs(30), || async {
            secrets
                .list(&kube::api::ListParams::default().labels("istio/multiCluster=true"))
                .await
                .map(|l| l.items.len() == peers)
                .unwrap_or(false)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let kib = rss_kib(agent.child.id());
        eprintln!(
            "agent RSS at idle with {peers} peers: {:.1} MiB",
            kib as f64 / 1024.0
        );
        results.push(kib);
        assert!(kib > 0 && kib < 200 * 1024, "RSS {kib} KiB");
    }
}

/// From an empty OpenBao and two empty clusters: the admin configures OpenBao only, then one agent per cluster
/// (each with only its own credentials) brings the whole mesh to a consistent state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_bring_an_empty_mesh_to_a_consistent_state() {
    let mesh = Mesh::start(2, "");
    let out = mesh.json(&["apply", "--openbao-only"]);
    let touched_clusters = out["applied"].as_array().expect("applied").iter().any(|c| {
        c["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("cluster"))
    });
    assert!(
        !touched_clusters,
        "the admin apply wrote only to OpenBao: {out}"
    );
    assert!(mesh.secret(0, "istio-system", "cacerts").await.is_none());

    // The Istio namespace exists before the agent is deployed (its Role lives there). The deploy files
    // (`meshtrust render agent | kubectl apply -f -`) bring the agent's identity and the reader identity, which
    // the agent itself may not create.
    for i in 0..2 {
        let client = mesh.env.clusters[i].client().await.expect("client");
        support::create_namespace(&client, "istio-system").await;
        support::deploy_agent(&mesh, i).await;
    }
    let _a = start_agent(&mesh, 0);
    let _b = start_agent(&mesh, 1);
    let start = Instant::now();
    loop {
        let out = mesh.meshtrust(&["verify"]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agents did not converge:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "two agents brought the mesh to a consistent state in {:?}",
        start.elapsed()
    );
    assert!(
        mesh.json(&["plan"])["changes"]
            .as_array()
            .expect("changes")
            .is_empty()
    );
}

/// An "OpenBao" on loopback that accepts connections and never answers: every request the agent makes hangs.
fn hanging_openbao() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

/// The agent for cluster 0 against `bao`, without waiting for readiness (a hung OpenBao never gives it).
fn start_hung_agent(mesh: &Mesh, bao: &str, extra: &[&str]) -> Agent {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cluster = &mesh.env.clusters[0];
    let child = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["agent", "--cluster", &cluster.name, "--token-request"])
        .args(["--poll-interval", "1s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .arg("--mesh")
        .arg(&mesh.file)
        .args(extra)
        .env("BAO_ADDR", bao)
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let agent = Agent { child, port };
    let start = Instant::now();
    while http_get(port, "/healthz").map(|r| r.0) != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(30), "no /healthz");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

/// SIGTERM, then the seconds until the process is gone (panics past `limit`), and its stderr.
fn terminate(agent: &mut Agent, limit: Duration) -> (Duration, String) {
    Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    let start = Instant::now();
    while agent.child.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < limit,
            "the agent did not stop within {limit:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut pipe) = agent.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (took, stderr)
}

fn errors_total(port: u16) -> f64 {
    http_get(port, "/metrics")
        .map(|(_, body)| {
            body.lines()
                .filter(|l| l.starts_with("meshtrust_reconcile_errors_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_openbao_neither_lapses_the_lease_nor_delays_sigterm() {
    use k8s_openapi::api::coordination::v1::Lease;
    let mesh = Mesh::start(1, "");
    // What `apply` would create; OpenBao here never answers, so nothing else is set up.
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("istio-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::all(mesh.env.clusters[0].client().await.expect("client"))
        .create(&PostParams::default(), &namespace)
        .await
        .expect("istio-system");
    agent_identity(&mesh, 0).await;
    let bao = hanging_openbao();
    let leases: Api<Lease> = Api::namespaced(
        mesh.env.clusters[0].client().await.expect("client"),
        "istio-system",
    );

    // A round that hangs for minutes: the Lease is renewed all along, and SIGTERM still ends the agent at once.
    let mut agent = start_hung_agent(
        &mesh,
        &bao,
        &["--round-timeout", "10m", "--openbao-timeout", "10m"],
    );
    let identity = format!("meshtrust-agent-{}", agent.child.id());
    let renewed = || async {
        let lease = leases
            .get_opt("meshtrust-agent")
            .await
            .expect("get lease")?;
        let spec = lease.spec?;
        (spec.holder_identity.as_deref() == Some(identity.as_str())).then_some(())?;
        spec.renew_time.map(|t| t.0.as_second())
    };
    wait_for(Duration::from_secs(20), || async {
        renewed().await.is_some()
    })
    .await;
    // Longer than the Lease's 10 s, all of it inside one hung round.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let last = renewed().await.expect("still the holder");
    let age = k8s_openapi::jiff::Timestamp::now().as_second() - last;
    assert!(
        age <= 5,
        "the Lease was last renewed {age} s ago during a hung round"
    );
    let (took, _) = terminate(&mut agent, Duration::from_secs(5));
    println!("SIGTERM in a hung round: exited in {took:?}");

    // A short deadline: each hung round is abandoned, counted as a failure and retried with backoff.
    let mut agent = start_hung_agent(
        &mesh,
        &bao,
        &["--round-timeout", "1s", "--openbao-timeout", "10m"],
    );
    wait_for(Duration::from_secs(30), || async {
        errors_total(agent.port) >= 2.0
    })
    .await;
    let (took, stderr) = terminate(&mut agent, Duration::from_secs(5));
    println!("SIGTERM with a short deadline: exited in {took:?}");
    assert!(
        stderr.contains("did not finish within its deadline of 1s"),
        "{stderr}"
    );
}

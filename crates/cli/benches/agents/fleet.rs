//! The fleet: N mesh clusters, each its own Istio namespace on one of a few real API servers, configured by the
//! admin's `meshtrust apply`, and one real `meshtrust agent` process per cluster (release build, defaults),
//! talking to OpenBao through the counting proxy.
//!
//! Why namespaces on shared API servers are faithful: each cluster keeps everything an agent touches apart:
//! its Istio namespace (`cacerts`, remote secrets, the Lease, the watched Secrets), its reader identity (a
//! ClusterRole and binding named after the namespace), its own Kubernetes auth mount, role and policy in
//! OpenBao, and its own process. What is shared is the API server process itself, so API server load is
//! concentrated, which only makes the numbers here more pessimistic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshtrust_testenv::{TestEnv, dying_with_owner};

/// A cluster of the fleet.
pub struct Member {
    pub name: String,
    pub namespace: String,
    /// Index of the API server it lives on.
    pub server: usize,
}

pub fn members(count: usize, servers: usize) -> Vec<Member> {
    (0..count)
        .map(|i| Member {
            name: format!("c{i:03}"),
            namespace: format!("istio-c{i:03}"),
            server: i % servers.max(1),
        })
        .collect()
}

/// The mesh file: every member with its API server's kubeconfig and its own Istio namespace; a short dwell so
/// that an agents-driven rotation completes within the run.
pub fn mesh_file(env: &TestEnv, members: &[Member], dwell: u64) -> String {
    let mut text = format!(
        "apiVersion: meshtrust.dev/v1\nkind: Mesh\nca:\n  rootRotation:\n    phaseDwell: {dwell}s\nclusters:\n"
    );
    for m in members {
        text.push_str(&format!(
            "  - name: {}\n    kubeconfig: {}\n    istioNamespace: {}\n",
            m.name,
            env.clusters[m.server].kubeconfig.display(),
            m.namespace
        ));
    }
    text
}

/// A `meshtrust` command as the admin runs it, with the store's root token.
pub fn admin(mesh: &Path, bao_addr: &str, token: &str, args: &[&str]) -> Result<Duration, String> {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(args)
        .arg("--mesh")
        .arg(mesh)
        .env("BAO_ADDR", bao_addr)
        .env("BAO_TOKEN", token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .map_err(|e| format!("running meshtrust: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "meshtrust {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(start.elapsed())
}

/// Running agents, stopped with SIGTERM (their Leases released) when dropped.
pub struct Agents {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    pub logs: PathBuf,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Agents {
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

/// The login ServiceAccount on every API server, then one agent per member at its defaults.
pub async fn start_agents(
    env: &TestEnv,
    members: &[Member],
    mesh: &Path,
    bao_addr: &str,
) -> Result<Agents, String> {
    // The agents log in as `agent.serviceAccount` in `agent.namespace` (mesh-wide: `istio-system/meshtrust-agent`),
    // one identity per API server, which each member's auth mount and role accept.
    for cluster in &env.clusters {
        let client = cluster.client().await.map_err(|e| e.to_string())?;
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "istio-system"}}))
                .map_err(|e| e.to_string())?;
        match kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
            .create(&kube::api::PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("{}: {e}", cluster.name)),
        }
        cluster
            .create_login_service_account("istio-system", "meshtrust-agent")
            .await
            .map_err(|e| format!("{}: {e}", cluster.name))?;
    }
    let logs = env.dir().join("agents");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut agents = Agents {
        children: Vec::new(),
        ports: Vec::new(),
        logs: logs.clone(),
    };
    for m in members {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log = std::fs::File::create(logs.join(format!("{}.log", m.name)))
            .map_err(|e| e.to_string())?;
        // Like the environment's servers: a bench stopped with Ctrl-C leaves no agent.
        let child = dying_with_owner(env!("CARGO_BIN_EXE_meshtrust"))
            .args(["agent", "--cluster", &m.name, "--token-request"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--kubeconfig")
            .arg(&env.clusters[m.server].kubeconfig)
            .arg("--mesh")
            .arg(mesh)
            .env("BAO_ADDR", bao_addr)
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the agent of {}: {e}", m.name))?;
        agents.children.push(child);
        agents.ports.push(port);
    }
    Ok(agents)
}

/// Waits until every agent answers /readyz with 200 (it leads and its last round succeeded).
pub async fn wait_ready(agents: &Agents, limit: Duration) -> Result<Duration, String> {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut ready = vec![false; agents.ports.len()];
    while start.elapsed() < limit {
        for (i, port) in agents.ports.iter().enumerate() {
            if ready[i] {
                continue;
            }
            let url = format!("http://127.0.0.1:{port}/readyz");
            ready[i] = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        }
        if ready.iter().all(|r| *r) {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waiting = ready.iter().filter(|r| !**r).count();
    Err(format!(
        "{waiting} agents were not ready within {limit:?}; see {}",
        agents.logs.display()
    ))
}

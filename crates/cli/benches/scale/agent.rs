//! meshtrust's side: the admin's `apply --openbao-only`, then a real `meshtrust agent` process for the real
//! cluster at its default settings, talking to OpenBao through the counting proxy.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshtrust_testenv::{TestEnv, dying_with_owner};

use crate::measure::{self, Idle};
use crate::{cluster, peers};

/// A child process killed when dropped, so a failed measurement leaves nothing running.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, as Kubernetes stops a pod: the agent releases its Lease, so the next one leads at once.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What one `apply --openbao-only` took: wall time and the requests OpenBao handled meanwhile.
pub struct Applied {
    pub seconds: f64,
    pub requests: Option<u64>,
}

/// The requests OpenBao has handled so far, from its own telemetry (`vault_core_handle_request_count` in
/// `sys/metrics`; reading it is not counted). Counted there rather than through a proxy, so that the apply
/// is timed talking to OpenBao directly.
pub async fn bao_requests(env: &TestEnv) -> Option<u64> {
    let text = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", env.bao.addr))
        .header("X-Vault-Token", &env.bao.root_token)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vault_core_handle_request_count "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
}

/// `meshtrust apply --openbao-only` for the mesh file: the admin configuring OpenBao for every cluster.
pub async fn apply_openbao_only(env: &TestEnv, mesh: &Path) -> Result<Applied, String> {
    let before = bao_requests(env).await;
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["apply", "--openbao-only", "--mesh"])
        .arg(mesh)
        .env("BAO_ADDR", &env.bao.addr)
        .env("BAO_TOKEN", &env.bao.root_token)
        // Simulated peers have no kubeconfig of their own; --openbao-only must not dial them.
        .env("KUBECONFIG", &env.clusters[0].kubeconfig)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .map_err(|e| format!("running meshtrust: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "apply --openbao-only failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let after = bao_requests(env).await;
    Ok(Applied {
        seconds: took.as_secs_f64(),
        requests: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
    })
}

/// Starts the agent for cluster-a with its defaults (poll interval included), OpenBao reached via `bao_addr`.
pub fn start(env: &TestEnv, mesh: &Path, bao_addr: &str) -> Guard {
    start_with(env, mesh, bao_addr, &[])
}

/// As [`start`], with `extra` flags.
pub fn start_with(env: &TestEnv, mesh: &Path, bao_addr: &str, extra: &[&str]) -> Guard {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(env.dir().join("agent.log")).expect("agent log");
    // Like the environment's servers: a bench stopped with Ctrl-C leaves no agent.
    let child = dying_with_owner(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["agent", "--cluster", "cluster-a", "--token-request"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--kubeconfig")
        .arg(&env.clusters[0].kubeconfig)
        .arg("--mesh")
        .arg(mesh)
        .args(extra)
        .env("BAO_ADDR", bao_addr)
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start meshtrust agent");
    Guard(child)
}

/// What one agent run measured.
pub struct AgentRun {
    pub sync: Duration,
    /// OpenBao requests from the cold start until every remote secret existed.
    pub sync_requests: usize,
    /// OpenBao requests one publication cost the agent (beyond its idle polls), averaged over the samples.
    pub requests_per_publication: f64,
    pub idle: Idle,
    pub propagation: Vec<Duration>,
}

/// The real cluster's side of a first run: its Istio namespace and the agent's login ServiceAccount.
pub async fn prepare(env: &TestEnv) -> Result<kube::Client, String> {
    let client = env.clusters[0].client().await.map_err(|e| e.to_string())?;
    cluster::ensure_namespace(&client, "istio-system").await;
    // A later row on the same servers finds it made already.
    if let Err(e) = env.clusters[0]
        .create_login_service_account("istio-system", "meshtrust-agent")
        .await
        && !e.to_string().contains("AlreadyExists")
    {
        return Err(e.to_string());
    }
    Ok(client)
}

/// Cold start to every remote secret, then idle, then propagation of `samples` peer publications (new
/// kubeconfig generations from `first_generation` on). The agent keeps running until the guard is dropped.
pub async fn run(
    env: &TestEnv,
    mesh: &Path,
    proxy: &crate::proxy::CountingProxy,
    count: usize,
    settings: &measure::Settings,
    first_generation: u64,
) -> Result<(AgentRun, Guard), String> {
    let client = prepare(env).await?;
    cluster::delete_remote_secrets(&client, "istio-system").await?;
    proxy.reset();
    let start = Instant::now();
    let agent = start_checked(env, mesh, &proxy.addr)?;
    cluster::wait_for_count(&client, "istio-system", count, settings.sync_limit)
        .await
        .ok_or_else(|| {
            format!(
                "the agent did not sync {count} remote secrets within {:?}; see {}",
                settings.sync_limit,
                env.dir().join("agent.log").display()
            )
        })?;
    let sync = start.elapsed();
    let sync_requests = proxy.hits().len();
    let idle = measure::idle(agent.pid(), proxy, settings.idle_window).await;
    proxy.reset();
    let bao = peers::root_client(&env.bao.addr, &env.bao.root_token);
    let propagation = measure::propagation(
        &bao,
        &client,
        "istio-system",
        count,
        &measure::Sampling {
            samples: settings.samples,
            limit: settings.propagation_limit,
            first_generation,
            period: measure::poll_period(&idle),
        },
    )
    .await?;
    let (polls, requests, _) = crate::proxy::polls(&proxy.hits(), Duration::from_millis(500));
    // Each publication is one poll group holding the round it started; the other groups are idle polls.
    let idle_polls = polls.saturating_sub(propagation.len());
    let requests_per_publication =
        requests.saturating_sub(idle_polls) as f64 / propagation.len().max(1) as f64;
    Ok((
        AgentRun {
            sync,
            sync_requests,
            requests_per_publication,
            idle,
            propagation,
        },
        agent,
    ))
}

fn start_checked(env: &TestEnv, mesh: &Path, addr: &str) -> Result<Guard, String> {
    let mut agent = start(env, mesh, addr);
    std::thread::sleep(Duration::from_millis(200));
    if let Ok(Some(status)) = agent.0.try_wait() {
        return Err(format!(
            "the agent exited at once ({status}); see {}",
            env.dir().join("agent.log").display()
        ));
    }
    Ok(agent)
}

/// The OpenBao requests of one periodic full re-read: an agent with `--full-reread-interval 20s`, counted over a
/// window holding exactly one re-read besides its idle polls (which cost one request each).
pub async fn full_reread(env: &TestEnv, mesh: &Path, proxy: &crate::proxy::CountingProxy) -> usize {
    let agent = start_with(env, mesh, &proxy.addr, &["--full-reread-interval", "20s"]);
    // The cold start's own full read ends well within this.
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.reset();
    tokio::time::sleep(Duration::from_secs(18)).await;
    let (polls, requests, _) = crate::proxy::polls(&proxy.hits(), Duration::from_millis(500));
    agent.stop();
    requests.saturating_sub(polls.saturating_sub(1))
}

//! A 3-node OpenBao (or, with `MESHTRUST_STORE=vault`, Vault) cluster on integrated storage (Raft) on
//! loopback: one active node, two standbys that forward to it. Nodes can be killed and restarted (they rejoin with their Raft data and are unsealed again),
//! so tests can take the leader away and measure how long the cluster and its clients take to recover.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::openbao::{TlsMaterial, spawn_persistent, write_raft_config};
use crate::probe::{http_json, http_ok, http_status};
use crate::process::ManagedProcess;
use crate::{Binaries, StoreKind, TestEnvError, ports::free_port};

pub struct OpenBaoNode {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// With test nodes: `https://<host address>:<port>`, where pods reach this node (the environment's private
    /// CA, `openbao-ca.pem`).
    pub tls_addr: Option<String>,
    dir: PathBuf,
    process: Option<ManagedProcess>,
}

pub struct OpenBaoCluster {
    pub nodes: Vec<OpenBaoNode>,
    pub root_token: String,
    /// Which server the nodes run.
    pub kind: StoreKind,
    unseal_key: String,
    bin: PathBuf,
}

fn err(message: String) -> TestEnvError {
    TestEnvError::Kube(message)
}

impl OpenBaoCluster {
    /// Starts `size` nodes under `dir`, initialises the first, joins and unseals the others, and mounts KV v2
    /// at `secret/`. Returns once a leader serves requests. With `tls`, each node also listens over TLS on
    /// the material's host address.
    pub(crate) fn start(
        bins: &Binaries,
        kind: StoreKind,
        dir: &Path,
        size: usize,
        tls: Option<&TlsMaterial>,
    ) -> Result<Self, TestEnvError> {
        // A node whose API, cluster or TLS port another test took between picking and binding keeps answering
        // on its other ports but never joins: start the whole cluster again, on new ports, in fresh directories.
        let mut attempt = 1;
        loop {
            match Self::start_once(bins, kind, dir, size, tls) {
                Err(e) if attempt < 3 && Self::port_was_taken(kind, dir, size) => {
                    eprintln!(
                        "a store node's port was taken ({e}); starting the cluster again (attempt {attempt})"
                    );
                    for i in 1..=size {
                        let node_dir = Self::node_dir(kind, dir, i);
                        std::fs::remove_dir_all(&node_dir).map_err(TestEnvError::io(&node_dir))?;
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn node_dir(kind: StoreKind, dir: &Path, i: usize) -> std::path::PathBuf {
        dir.join(format!("{}-{i}", kind.slug()))
    }

    fn port_was_taken(kind: StoreKind, dir: &Path, size: usize) -> bool {
        (1..=size)
            .any(|i| crate::ports::port_was_taken(&kind.log_in(&Self::node_dir(kind, dir, i))))
    }

    fn start_once(
        bins: &Binaries,
        kind: StoreKind,
        dir: &Path,
        size: usize,
        tls: Option<&TlsMaterial>,
    ) -> Result<Self, TestEnvError> {
        let mut nodes = Vec::with_capacity(size);
        for i in 1..=size {
            nodes.push(OpenBaoNode::configure(
                kind,
                &Self::node_dir(kind, dir, i),
                i,
                tls,
            )?);
        }
        let mut cluster = Self {
            nodes,
            root_token: String::new(),
            kind,
            unseal_key: String::new(),
            bin: kind.binary(bins)?,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.init_first()?;
        let leader = cluster.nodes[0].addr.clone();
        for i in 1..size {
            let join = format!("{}/v1/sys/storage/raft/join", cluster.nodes[i].addr);
            let body = format!("{{\"leader_api_addr\":\"{leader}\"}}");
            retry(|| http_json("POST", &join, None, &body), "raft join")?;
            cluster.unseal(i)?;
        }
        cluster.wait_for_leader(Duration::from_secs(60))?;
        let mount = format!("{leader}/v1/sys/mounts/secret");
        let token = cluster.root_token.clone();
        retry(
            || {
                http_json(
                    "POST",
                    &mount,
                    Some(&token),
                    r#"{"type":"kv","options":{"version":"2"}}"#,
                )
            },
            "mount KV v2 at secret/",
        )?;
        Ok(cluster)
    }

    fn init_first(&mut self) -> Result<(), TestEnvError> {
        let url = format!("{}/v1/sys/init", self.nodes[0].addr);
        let init = retry(
            || {
                http_json(
                    "PUT",
                    &url,
                    None,
                    r#"{"secret_shares":1,"secret_threshold":1}"#,
                )
            },
            "init",
        )?;
        self.unseal_key = init["keys_base64"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.root_token = init["root_token"].as_str().unwrap_or_default().to_string();
        self.unseal(0)?;
        // The first node elects itself before the others join.
        let health = format!("{}/v1/sys/health", self.nodes[0].addr);
        retry(|| http_ok(None, &health).then_some(()), "first node active")
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestEnvError> {
        let node = &mut self.nodes[i];
        let mut process = spawn_persistent(self.kind, &self.bin, &node.dir)?;
        let status = format!("{}/v1/sys/seal-status", node.addr);
        process.wait_ready(Duration::from_secs(30), || http_ok(None, &status))?;
        node.process = Some(process);
        Ok(())
    }

    fn unseal(&self, i: usize) -> Result<(), TestEnvError> {
        let url = format!("{}/v1/sys/unseal", self.nodes[i].addr);
        let body = format!("{{\"key\":\"{}\"}}", self.unseal_key);
        let status = format!("{}/v1/sys/seal-status", self.nodes[i].addr);
        retry(
            || {
                let answer = http_json("PUT", &url, None, &body)?;
                let sealed = answer["sealed"].as_bool().unwrap_or(true)
                    && http_json("GET", &status, None, "")?["sealed"]
                        .as_bool()
                        .unwrap_or(true);
                (!sealed).then_some(())
            },
            &format!(
                "unseal of node {} (log: {})",
                i + 1,
                self.kind.log_in(&self.nodes[i].dir).display()
            ),
        )
    }

    /// Every node's address, space-separated order as `BAO_ADDRS` takes them.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Every node's TLS address (with test nodes), as pods reach them.
    pub fn tls_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.tls_addr.clone())
            .collect()
    }

    /// The index of the active node, if one answers as active now (`sys/health` 200; standbys answer 429).
    pub fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.process.is_some() && http_status(&format!("{}/v1/sys/health", n.addr)) == Some(200)
        })
    }

    /// Waits until some running node is active, and returns its index.
    pub fn wait_for_leader(&self, limit: Duration) -> Result<usize, TestEnvError> {
        let start = Instant::now();
        loop {
            if let Some(i) = self.leader() {
                return Ok(i);
            }
            if start.elapsed() > limit {
                return Err(err(format!(
                    "no {} node became active within {limit:?}; see {}",
                    self.kind.name(),
                    self.kind.log_in(&self.nodes[0].dir).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until autopilot counts every running node as a healthy voter. Raft (Vault's and OpenBao's) joins
    /// a node as a non-voter and promotes it only after `server_stabilization_time` (10 s), and a restarted
    /// node must catch up again: a leader killed before that leaves no quorum, and no node is ever elected.
    /// Tests that kill the leader call this first.
    pub fn wait_for_voters(&self, limit: Duration) -> Result<(), TestEnvError> {
        let size = self.nodes.len();
        retry_for(limit, "every node a healthy voter", || {
            let state = self
                .nodes
                .iter()
                .filter(|n| n.process.is_some())
                .find_map(|n| {
                    http_json(
                        "GET",
                        &format!("{}/v1/sys/storage/raft/autopilot/state", n.addr),
                        Some(&self.root_token),
                        "",
                    )
                })?;
            let data = state.get("data").unwrap_or(&state);
            let voters = data["voters"].as_array().map_or(0, Vec::len);
            (data["healthy"].as_bool() == Some(true) && voters == size).then_some(())
        })
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            p.stop();
        }
    }

    /// Starts node `i` again with its Raft data and unseals it; it rejoins as a standby.
    pub fn restart(&mut self, i: usize) -> Result<(), TestEnvError> {
        self.kill(i);
        self.spawn(i)?;
        self.unseal(i)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.process.as_ref().and_then(ManagedProcess::pid))
            .collect()
    }

    /// A `bao` (or `vault`) CLI command aimed at node `i`.
    pub fn cli(&self, i: usize) -> std::process::Command {
        StoreKind::cli(&self.bin, &self.nodes[i].addr, &self.root_token)
    }
}

impl OpenBaoNode {
    /// Writes node `n`'s config: Raft storage under its own directory, its own API and cluster ports.
    fn configure(
        kind: StoreKind,
        dir: &Path,
        n: usize,
        tls: Option<&TlsMaterial>,
    ) -> Result<Self, TestEnvError> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(TestEnvError::io(&data))?;
        let port = free_port().map_err(TestEnvError::io(dir))?;
        let cluster_port = free_port().map_err(TestEnvError::io(dir))?;
        // performance_multiplier 1: Raft's production timings, so a new leader is elected in about a second.
        write_raft_config(
            kind,
            dir,
            &data,
            &format!("node{n}"),
            port,
            cluster_port,
            "  performance_multiplier = 1\n",
        )?;
        let tls_addr = match tls {
            Some(material) => {
                let (addr, stanza) = material.listener(dir)?;
                let config = dir.join(format!("{}.hcl", kind.slug()));
                let mut hcl =
                    std::fs::read_to_string(&config).map_err(TestEnvError::io(&config))?;
                hcl.push_str(&stanza);
                std::fs::write(&config, hcl).map_err(TestEnvError::io(&config))?;
                Some(addr)
            }
            None => None,
        };
        Ok(Self {
            addr: format!("http://127.0.0.1:{port}"),
            tls_addr,
            dir: dir.to_path_buf(),
            process: None,
        })
    }
}

/// Retries a bootstrap step for up to 30 s: listeners answer before Raft is ready.
fn retry<T>(step: impl FnMut() -> Option<T>, what: &str) -> Result<T, TestEnvError> {
    retry_for(Duration::from_secs(30), what, step)
}

fn retry_for<T>(
    limit: Duration,
    what: &str,
    mut step: impl FnMut() -> Option<T>,
) -> Result<T, TestEnvError> {
    let start = Instant::now();
    loop {
        if let Some(v) = step() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(err(format!(
                "store HA: {what} kept failing for {} s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

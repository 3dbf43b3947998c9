//! A real `meshtrust agent` process for one test cluster, out of cluster, with its own ServiceAccount token.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use meshtrust_testenv::{TestEnv, dying_with_owner};

pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProcess {
    /// The agent of cluster `index`, polling every second, reaching OpenBao at `bao_addr` (and failing over
    /// to `bao_addrs`). It dies with the test (setpriv --pdeathsig) even if the test is killed.
    pub fn start(
        env: &TestEnv,
        index: usize,
        mesh_file: &Path,
        bao_addr: &str,
        bao_addrs: Option<&str>,
    ) -> AgentProcess {
        Self::start_with(env, index, mesh_file, bao_addr, bao_addrs, &[])
    }

    /// The same with `extra` agent flags (`--resync-interval 5s`).
    pub fn start_with(
        env: &TestEnv,
        index: usize,
        mesh_file: &Path,
        bao_addr: &str,
        bao_addrs: Option<&str>,
        extra: &[&str],
    ) -> AgentProcess {
        let cluster = &env.clusters[index];
        let log = env.dir().join(format!("agent-{}.log", cluster.name));
        let mut cmd = dying_with_owner(env!("CARGO_BIN_EXE_meshtrust"));
        cmd.args(["agent", "--cluster", &cluster.name, "--token-request"])
            .args(["--poll-interval", "1s", "--openbao-timeout", "2s"])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg("--mesh")
            .arg(mesh_file)
            .env("BAO_ADDR", bao_addr)
            .env("MESHTRUST_LOG", "info,meshtrust_agent=debug")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDRS")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("agent log"),
            );
        if let Some(addrs) = bao_addrs {
            cmd.env("BAO_ADDRS", addrs);
        }
        AgentProcess {
            child: cmd.spawn().expect("start agent"),
            log,
        }
    }

    /// The last `lines` lines of its log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

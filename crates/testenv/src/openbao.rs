use std::path::Path;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::process::ManagedProcess;
use crate::{Binaries, TestEnvError, ports::free_port};

/// A real OpenBao server in dev mode (in-memory storage, unsealed, KV v2 at `secret/`) with a random root token.
pub struct OpenBaoServer {
    pub addr: String,
    pub root_token: String,
    process: ManagedProcess,
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl OpenBaoServer {
    pub(crate) fn start(bins: &Binaries, dir: &Path) -> Result<Self, TestEnvError> {
        let port = free_port().map_err(TestEnvError::io(dir))?;
        let root_token: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let process = spawn(&bins.bao, dir, port, &root_token)?;
        let mut server = Self {
            addr: format!("http://127.0.0.1:{port}"),
            root_token,
            process,
            bin: bins.bao.clone(),
            dir: dir.to_path_buf(),
            port,
        };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops the server (dev mode: its state is lost), as a fault-injection step in tests.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts a fresh dev server on the same address and token. Dev mode keeps no state across restarts.
    pub fn restart_empty(&mut self) -> Result<(), TestEnvError> {
        self.process.stop();
        self.process = spawn(&self.bin, &self.dir, self.port, &self.root_token)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), TestEnvError> {
        let health = format!("{}/v1/sys/health", self.addr);
        self.process.wait_ready(Duration::from_secs(30), || {
            crate::probe::http_ok(None, &health)
        })
    }

    /// A `bao` CLI command aimed at this server, for tests that use the CLI as an independent checker.
    pub fn cli(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token);
        cmd
    }
}

fn spawn(bin: &Path, dir: &Path, port: u16, token: &str) -> Result<ManagedProcess, TestEnvError> {
    let args = vec![
        "server".to_string(),
        "-dev".to_string(),
        format!("-dev-root-token-id={token}"),
        format!("-dev-listen-address=127.0.0.1:{port}"),
        "-dev-no-store-token".to_string(),
    ];
    ManagedProcess::spawn("openbao", bin, &args, dir.join("openbao.log"))
}

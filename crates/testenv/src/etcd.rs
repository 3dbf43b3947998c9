use std::path::Path;
use std::time::Duration;

use crate::process::ManagedProcess;
use crate::{Binaries, TestEnvError, ports::free_port};

/// One etcd shared by every cluster of an environment; each API server uses its own `--etcd-prefix`.
pub(crate) struct Etcd {
    pub url: String,
    pub process: ManagedProcess,
}

impl Etcd {
    pub(crate) fn start(bins: &Binaries, dir: &Path) -> Result<Self, TestEnvError> {
        let client_port = free_port().map_err(TestEnvError::io(dir))?;
        let peer_port = free_port().map_err(TestEnvError::io(dir))?;
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data = dir.join("etcd-data");
        // A retry after a port clash starts from scratch: the data would remember the old peer address.
        let _ = std::fs::remove_dir_all(&data);
        let args = vec![
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut process = ManagedProcess::spawn("etcd", &bins.etcd, &args, dir.join("etcd.log"))?;
        let health = format!("{url}/health");
        process.wait_ready(Duration::from_secs(30), || {
            crate::probe::http_ok(None, &health)
        })?;
        Ok(Self { url, process })
    }
}

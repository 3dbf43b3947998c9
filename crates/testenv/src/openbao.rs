use std::path::Path;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::process::ManagedProcess;
use crate::{Binaries, StoreKind, TestEnvError, ports::free_port};

/// A real OpenBao (or, with `MESHTRUST_STORE=vault`, HashiCorp Vault) server on a loopback port: in dev mode
/// (in-memory storage, unsealed, KV v2 at `secret/`, a random root token), or persistent (Raft storage,
/// initialised and unsealed with one key) for tests that restart it and expect its state back. The two
/// servers take the same flags, configuration and API calls here.
pub struct OpenBaoServer {
    pub addr: String,
    pub root_token: String,
    /// Which server this is.
    pub kind: StoreKind,
    /// With test nodes: a second listener over TLS on the host address pods reach, `https://<ip>:<port>`,
    /// its certificate signed by a private CA ([`tls_ca_pem`](Self::tls_ca_pem), also in `openbao-ca.pem`).
    pub tls_addr: Option<String>,
    pub tls_ca_pem: Option<String>,
    /// The extra config file of the TLS listener, passed again on a restart.
    tls_config: Option<std::path::PathBuf>,
    process: ManagedProcess,
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
    /// Persistent mode: the unseal key.
    unseal_key: Option<String>,
}

impl OpenBaoServer {
    /// A dev server on loopback; with `tls` (a certificate for a test node's host address) also over TLS
    /// there, so that pods reach it as users run it: https with a private CA.
    pub(crate) fn start(
        bins: &Binaries,
        kind: StoreKind,
        dir: &Path,
        tls: Option<&TlsMaterial>,
    ) -> Result<Self, TestEnvError> {
        let port = free_port().map_err(TestEnvError::io(dir))?;
        let root_token: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let bin = kind.binary(bins)?;
        let tls = match tls {
            Some(material) => Some(tls_listener(dir, material)?),
            None => None,
        };
        let tls_config = tls.as_ref().map(|t| t.config.clone());
        let process = spawn(kind, &bin, dir, port, &root_token, tls_config.as_deref())?;
        let mut server = Self {
            addr: format!("http://127.0.0.1:{port}"),
            root_token,
            kind,
            tls_addr: tls.as_ref().map(|t| t.addr.clone()),
            tls_ca_pem: tls.map(|t| t.ca_pem),
            tls_config,
            process,
            bin,
            dir: dir.to_path_buf(),
            port,
            unseal_key: None,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// A persistent server: integrated storage under `dir`, initialised with one unseal key, KV v2 mounted at
    /// `secret/` like the dev server's.
    pub(crate) fn start_persistent(
        bins: &Binaries,
        kind: StoreKind,
        dir: &Path,
    ) -> Result<Self, TestEnvError> {
        let port = free_port().map_err(TestEnvError::io(dir))?;
        let addr = format!("http://127.0.0.1:{port}");
        // Integrated storage (raft) needs a cluster address too.
        let cluster_port = free_port().map_err(TestEnvError::io(dir))?;
        let data = dir.join(format!("{}-data", kind.slug()));
        std::fs::create_dir_all(&data).map_err(TestEnvError::io(&data))?;
        write_raft_config(kind, dir, &data, "node1", port, cluster_port, "")?;
        let bin = kind.binary(bins)?;
        let process = spawn_persistent(kind, &bin, dir)?;
        let mut server = Self {
            addr: addr.clone(),
            root_token: String::new(),
            kind,
            tls_addr: None,
            tls_ca_pem: None,
            tls_config: None,
            process,
            bin,
            dir: dir.to_path_buf(),
            port,
            unseal_key: None,
        };
        let seal_status = format!("{addr}/v1/sys/seal-status");
        server.process.wait_ready(Duration::from_secs(30), || {
            crate::probe::http_ok(None, &seal_status)
        })?;
        // The listener answers before integrated storage is ready for init; retry briefly.
        let mut init = None;
        for _ in 0..50 {
            init = crate::probe::http_json(
                "PUT",
                &format!("{addr}/v1/sys/init"),
                None,
                r#"{"secret_shares":1,"secret_threshold":1}"#,
            );
            if init.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let init = init.ok_or_else(|| {
            TestEnvError::Kube(format!(
                "{} init failed; see {}",
                kind.name(),
                server.process.log.display()
            ))
        })?;
        let key = init["keys_base64"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        server.root_token = init["root_token"].as_str().unwrap_or_default().to_string();
        server.unseal_key = Some(key);
        server.unseal()?;
        crate::probe::http_json(
            "POST",
            &format!("{addr}/v1/sys/mounts/secret"),
            Some(&server.root_token),
            r#"{"type":"kv","options":{"version":"2"}}"#,
        )
        .ok_or_else(|| TestEnvError::Kube("cannot mount KV v2 at secret/".into()))?;
        Ok(server)
    }

    fn unseal(&mut self) -> Result<(), TestEnvError> {
        let key = self.unseal_key.clone().unwrap_or_default();
        self.call_retrying("PUT", "sys/unseal", None, &format!("{{\"key\":\"{key}\"}}"))?;
        self.wait_ready()
    }

    /// One API call during bootstrap, retried for up to 10 s: the listener answers before integrated
    /// storage is ready for init or unseal.
    fn call_retrying(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Result<serde_json::Value, TestEnvError> {
        let url = format!("{}/v1/{path}", self.addr);
        for _ in 0..50 {
            if let Some(answer) = crate::probe::http_json(method, &url, token, body) {
                return Ok(answer);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(TestEnvError::Kube(format!(
            "{} {method} {path} kept failing; see {}",
            self.kind.name(),
            self.process.log.display()
        )))
    }

    /// Persistent mode: starts the stopped server again on the same address and unseals it; its state is back.
    pub fn restart(&mut self) -> Result<(), TestEnvError> {
        if self.unseal_key.is_none() {
            return self.restart_empty();
        }
        self.process.stop();
        self.process = spawn_persistent(self.kind, &self.bin, &self.dir)?;
        let seal_status = format!("{}/v1/sys/seal-status", self.addr);
        self.process.wait_ready(Duration::from_secs(30), || {
            crate::probe::http_ok(None, &seal_status)
        })?;
        self.unseal()
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
        self.process = spawn(
            self.kind,
            &self.bin,
            &self.dir,
            self.port,
            &self.root_token,
            self.tls_config.as_deref(),
        )?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), TestEnvError> {
        let health = format!("{}/v1/sys/health", self.addr);
        self.process.wait_ready(Duration::from_secs(30), || {
            crate::probe::http_ok(None, &health)
        })
    }

    /// A `bao` (or `vault`) CLI command aimed at this server, for tests that use the CLI as an independent
    /// checker. Both CLIs take the same commands.
    pub fn cli(&self) -> std::process::Command {
        StoreKind::cli(&self.bin, &self.addr, &self.root_token)
    }
}

/// A Raft node's configuration, `<slug>.hcl` in `dir`. `disable_mlock` is explicit because Vault refuses to
/// start Raft storage without it (OpenBao accepts it too); `raft_extra` goes into the storage stanza.
pub(crate) fn write_raft_config(
    kind: StoreKind,
    dir: &Path,
    data: &Path,
    node_id: &str,
    port: u16,
    cluster_port: u16,
    raft_extra: &str,
) -> Result<(), TestEnvError> {
    let addr = format!("http://127.0.0.1:{port}");
    let hcl = format!(
        "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"{node_id}\"\n{raft_extra}}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = 1\n}}\napi_addr = \"{addr}\"\ncluster_addr = \"http://127.0.0.1:{cluster_port}\"\ndisable_mlock = true\n",
        data.display()
    );
    let config = dir.join(format!("{}.hcl", kind.slug()));
    std::fs::write(&config, hcl).map_err(TestEnvError::io(&config))
}

pub(crate) fn spawn_persistent(
    kind: StoreKind,
    bin: &Path,
    dir: &Path,
) -> Result<ManagedProcess, TestEnvError> {
    let args = vec![
        "server".to_string(),
        format!(
            "-config={}",
            dir.join(format!("{}.hcl", kind.slug())).display()
        ),
    ];
    ManagedProcess::spawn(kind.slug(), bin, &args, kind.log_in(dir))
}

fn spawn(
    kind: StoreKind,
    bin: &Path,
    dir: &Path,
    port: u16,
    token: &str,
    extra_config: Option<&Path>,
) -> Result<ManagedProcess, TestEnvError> {
    let mut args = vec![
        "server".to_string(),
        "-dev".to_string(),
        format!("-dev-root-token-id={token}"),
        format!("-dev-listen-address=127.0.0.1:{port}"),
        "-dev-no-store-token".to_string(),
    ];
    // Dev mode merges a config file's listeners with its own.
    args.extend(extra_config.map(|c| format!("-config={}", c.display())));
    ManagedProcess::spawn(kind.slug(), bin, &args, kind.log_in(dir))
}

struct TlsListener {
    addr: String,
    ca_pem: String,
    config: std::path::PathBuf,
}

/// A private CA and a server certificate for one host address, written once per environment (`openbao-ca.pem`,
/// `openbao-tls.crt`, `openbao-tls.key`) and shared by every TLS listener there (the dev server's and each
/// Raft node's, on ports of their own).
pub(crate) struct TlsMaterial {
    pub(crate) ip: String,
    pub(crate) ca_pem: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl TlsMaterial {
    pub(crate) fn write(dir: &Path, ip: &str) -> Result<Self, TestEnvError> {
        let (ca_pem, cert_pem, key_pem) =
            crate::certs::private_ca_server("meshtrust-test-openbao-ca", &[ip.to_string()])?;
        let write = |file: &str, text: &str| -> Result<std::path::PathBuf, TestEnvError> {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(TestEnvError::io(&path))?;
            Ok(path)
        };
        write("openbao-ca.pem", &ca_pem)?;
        Ok(Self {
            ip: ip.to_string(),
            cert: write("openbao-tls.crt", &cert_pem)?,
            key: write("openbao-tls.key", &key_pem)?,
            ca_pem,
        })
    }

    /// A free port on the host address and the HCL `listener` stanza serving it over TLS.
    pub(crate) fn listener(&self, dir: &Path) -> Result<(String, String), TestEnvError> {
        let port = free_port().map_err(TestEnvError::io(dir))?;
        let stanza = format!(
            "listener \"tcp\" {{\n  address = \"{}:{port}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
            self.ip,
            self.cert.display(),
            self.key.display()
        );
        Ok((format!("https://{}:{port}", self.ip), stanza))
    }
}

/// The dev server's TLS listener on the material's host address, as an extra config file.
fn tls_listener(dir: &Path, material: &TlsMaterial) -> Result<TlsListener, TestEnvError> {
    let (addr, stanza) = material.listener(dir)?;
    let config = dir.join("openbao-tls.hcl");
    std::fs::write(&config, stanza).map_err(TestEnvError::io(&config))?;
    Ok(TlsListener {
        addr,
        ca_pem: material.ca_pem.clone(),
        config,
    })
}

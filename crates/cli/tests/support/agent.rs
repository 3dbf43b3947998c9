//! A `meshtrust agent` process against a test mesh: its identity in the cluster, starting it, and reading its
//! health and metrics endpoints.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Mesh;

/// A `meshtrust agent` process; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        eprintln!("GET {path}: {e}");
        return None;
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string(),
    ))
}

/// The agent's identity in its cluster: its ServiceAccount, allowed to have OpenBao review its tokens.
pub async fn agent_identity(mesh: &Mesh, index: usize) {
    mesh.env.clusters[index]
        .create_login_service_account("istio-system", "meshtrust-agent")
        .await
        .expect("agent identity");
}

pub fn start_agent(mesh: &Mesh, index: usize) -> Agent {
    start_agent_with(mesh, index, &mesh.file, &[])
}

pub fn start_agent_with(
    mesh: &Mesh,
    index: usize,
    mesh_file: &std::path::Path,
    extra: &[&str],
) -> Agent {
    start_agent_binary(
        std::path::Path::new(env!("CARGO_BIN_EXE_meshtrust")),
        mesh,
        index,
        mesh_file,
        extra,
    )
}

/// An agent from `binary` (another release's `meshtrust`, for upgrade tests), ready once `/readyz` answers 200.
pub fn start_agent_binary(
    binary: &std::path::Path,
    mesh: &Mesh,
    index: usize,
    mesh_file: &std::path::Path,
    extra: &[&str],
) -> Agent {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cluster = &mesh.env.clusters[index];
    let child = Command::new(binary)
        .args([
            "agent",
            "--cluster",
            &cluster.name,
            "--token-request",
            "--poll-interval",
            "1s",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .arg("--mesh")
        .arg(mesh_file)
        .args(extra)
        .arg("--log-format")
        .arg("json")
        .arg("-v")
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let agent = Agent { child, port };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some((200, _)) = http_get(port, "/readyz") {
            return agent;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent did not become ready");
}

//! Helpers for the tests on real nodes (node_agent.rs, node_istio.rs): a mesh whose clusters have a node each,
//! kubectl and helm aimed at one cluster, and HTTP through `kubectl port-forward`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshtrust_testenv::{NodeBinaries, TestEnv, mesh_file};

use super::Mesh;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/<args[0]> <args[1..]>` and returns its trimmed stdout (build scripts print a path).
pub fn script(args: &[&str]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts").join(args[0]))
        .args(&args[1..])
        .stderr(Stdio::inherit());
    run(cmd).trim().to_string()
}

/// Runs and requires success; returns stdout.
pub fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `clusters` clusters with a node each and `images` loaded; the mesh file points the pods at OpenBao over
/// TLS (private CA in `openbao-ca.pem`).
pub fn mesh_with_nodes(clusters: usize, images: &[&Path]) -> Mesh {
    mesh_on(
        TestEnv::builder()
            .clusters(clusters)
            .nodes(images.iter().map(|i| i.to_path_buf()).collect()),
    )
}

/// The same with OpenBao as a 3-node Raft cluster, each node over TLS where pods reach it; the mesh file
/// names the first. Start it outside a tokio runtime (its setup blocks).
pub fn mesh_with_nodes_and_openbao_ha(clusters: usize, images: &[&Path]) -> Mesh {
    mesh_on(
        TestEnv::builder()
            .clusters(clusters)
            .openbao_ha()
            .nodes(images.iter().map(|i| i.to_path_buf()).collect()),
    )
}

fn mesh_on(builder: meshtrust_testenv::TestEnvBuilder) -> Mesh {
    let env = builder.start().expect("test environment with nodes");
    let file = env.dir().join("mesh.yaml");
    std::fs::write(&file, mesh_file(&env)).expect("write mesh file");
    Mesh { env, file }
}

pub fn kubectl(mesh: &Mesh, cluster: usize) -> Command {
    let mut cmd = Command::new(NodeBinaries::locate().expect("node binaries").kubectl);
    cmd.arg("--kubeconfig")
        .arg(&mesh.env.clusters[cluster].kubeconfig);
    cmd
}

/// Helm (`scripts/build-helm`) aimed at one cluster, its cache and config inside the environment's directory.
pub fn helm(mesh: &Mesh, cluster: usize) -> Command {
    let mut cmd = Command::new(script(&["build-helm", "print-path"]));
    let home = mesh.env.dir().join("helm");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .arg("--kubeconfig")
        .arg(&mesh.env.clusters[cluster].kubeconfig);
    cmd
}

/// GET `path` on `remote_port` of `target` (`pod/NAME`, `deploy/NAME`) in `namespace` through
/// `kubectl port-forward`: API server, kubelet, containerd, the pod's network namespace. Blocking.
pub fn port_forward_get(
    mesh: &Mesh,
    cluster: usize,
    namespace: &str,
    target: &str,
    remote_port: u16,
    path: &str,
) -> String {
    let port = meshtrust_testenv::free_port().expect("free port");
    let mut forward = kubectl(mesh, cluster)
        .args(["-n", namespace, "port-forward", target])
        .arg(format!("{port}:{remote_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let first = forwarding_line(&mut forward);
    let url = format!("http://127.0.0.1:{port}{path}");
    let start = Instant::now();
    let body = loop {
        if let Ok(text) = reqwest::blocking::get(&url).and_then(|r| r.text()) {
            break text;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = forward.kill();
            panic!("no answer from {url} through port-forward ({first})");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = forward.kill();
    let _ = forward.wait();
    body
}

/// kubectl's "Forwarding from 127.0.0.1:<port>" line, printed once it listens. The rest of its output is
/// drained on a thread: kubectl writes a line per connection and dies of SIGPIPE if nobody reads them.
fn forwarding_line(forward: &mut Child) -> String {
    let mut lines = BufReader::new(forward.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || lines.for_each(drop));
    first
}

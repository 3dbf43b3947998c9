//! What an operator does first, against real servers: `meshtrust init` from kubeconfig contexts then `apply`
//! and `verify`; the agent run outside a cluster with no flag but `--listen`, which names the fix for a missing
//! ServiceAccount once and recovers when the files are applied; man pages.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use meshtrust_testenv::dying_with_owner;
use support::Mesh;

#[test]
fn init_writes_a_mesh_file_with_which_apply_and_verify_pass() {
    let mesh = Mesh::start(2, "");
    // init refuses to overwrite, so the environment's own mesh file makes room for the written one.
    std::fs::remove_file(&mesh.file).expect("remove mesh file");
    let kubeconfigs = std::env::join_paths(mesh.env.clusters.iter().map(|c| c.kubeconfig.clone()))
        .expect("KUBECONFIG");
    let init = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_meshtrust"))
            .args(["init", "--context", "cluster-a", "--context", "cluster-b"])
            .args(["--openbao", &mesh.env.bao.addr, "--out"])
            .arg(out)
            .env("KUBECONFIG", &kubeconfigs)
            .output()
            .expect("run meshtrust init")
    };
    let out = init(&mesh.file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "init failed: {stderr}");
    assert!(
        stderr.contains("with 2 cluster(s): cluster-a, cluster-b"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&mesh.file).expect("written");
    assert!(
        text.contains("# from kubeconfig context \"cluster-a\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("apiServer: \"{}\"", mesh.env.clusters[1].server)),
        "{text}"
    );
    // The kubeconfigs sit next to the mesh file, so the paths are relative and the directory can move.
    assert!(
        text.contains("kubeconfig: \"")
            && !text.contains(&format!("kubeconfig: \"{}", mesh.env.dir().display())),
        "{text}"
    );

    mesh.ok(&["apply"]);
    mesh.ok(&["verify"]);

    let again = init(&mesh.file);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&mesh.file).expect("kept"), text);
}

#[test]
fn init_explains_an_unknown_context() {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kc");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: kind-a\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {}\n",
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["init", "--context", "kind-z", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--out")
        .arg(dir.path().join("mesh.yaml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: context \"kind-z\" is not in the kubeconfig (contexts: kind-a)"
    );
    assert!(!dir.path().join("mesh.yaml").exists());
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "meshtrust.1",
        "meshtrust-agent.1",
        "meshtrust-init.1",
        "meshtrust-render-agent.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH "), "{page} is a man page");
    }
    // `man` itself reads them, when it is installed (it is not needed for the check above).
    if let Ok(rendered) = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("meshtrust-init.1"))
        .env("MANPAGER", "cat")
        .output()
        && rendered.status.success()
    {
        assert!(String::from_utf8_lossy(&rendered.stdout).contains("--context"));
    }
}

/// A loopback port for an agent's health server (outside the ephemeral range; see testenv).
fn free_port() -> u16 {
    meshtrust_testenv::free_port().expect("free port")
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ =
        stream.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    raw.starts_with("HTTP/1.1 200")
}

/// Creates every object `meshtrust render agent` prints, as `kubectl apply -f -` would.
async fn apply_rendered(mesh: &Mesh, cluster: &str) {
    let yaml = mesh.ok(&["render", "agent", "--cluster", cluster]);
    let client = mesh.env.clusters[0].client().await.expect("client");
    for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
        let object: serde_json::Value = serde_saphyr::from_str(doc).expect("YAML");
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().expect("kind"));
        let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .expect("kind");
        let resource: ApiResource = resource;
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let dynamic: DynamicObject = serde_json::from_value(object).expect("object");
        // Like `kubectl apply`: what `meshtrust apply` already made (the reader identity) is fine as it is.
        match api.create(&PostParams::default(), &dynamic).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("create: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_outside_a_cluster_and_names_the_fix_for_a_missing_service_account() {
    let mesh = Mesh::start(1, "");
    mesh.ok(&["apply"]);
    let port = free_port();
    let log = mesh.env.dir().join("agent.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    // No --kubeconfig, no token flag: outside a pod the mesh file's kubeconfig and TokenRequest are the defaults.
    // The agent dies with the test even when an assertion fails before the test kills it.
    let mut child = dying_with_owner(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["agent", "--cluster", "cluster-a", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--mesh")
        .arg(&mesh.file)
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env_remove("BAO_TOKEN")
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start agent");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, limit: Duration, check: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < limit,
                "{what} within {limit:?}; log:\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    };
    let fix = "`meshtrust render agent --cluster cluster-a | kubectl apply -f -`";
    wait(
        "the missing ServiceAccount reported",
        Duration::from_secs(30),
        &|| read_log().contains(fix),
    );
    // A few retries later it is still reported once, and never as a debug dump.
    std::thread::sleep(Duration::from_secs(4));
    let text = read_log();
    assert_eq!(text.matches(fix).count(), 1, "reported once:\n{text}");
    assert!(
        text.contains("a TokenRequest for the ServiceAccount istio-system/meshtrust-agent"),
        "{text}"
    );
    assert!(
        text.contains("kubeconfig"),
        "says which kubeconfig it uses:\n{text}"
    );
    for dump in ["Status {", "Some(", "ErrorResponse"] {
        assert!(!text.contains(dump), "debug dump {dump:?} in:\n{text}");
    }
    assert!(!ready(port));

    // A second agent on the same port says so and how to pick another.
    let second = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["agent", "--cluster", "cluster-a", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--mesh")
        .arg(&mesh.file)
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .output()
        .expect("second agent");
    assert!(!second.status.success());
    let second_err = String::from_utf8_lossy(&second.stderr);
    assert!(
        second_err.contains("already in use") && second_err.contains("--listen 127.0.0.1:PORT"),
        "{second_err}"
    );

    apply_rendered(&mesh, "cluster-a").await;
    let took = wait(
        "ready after the files are applied",
        Duration::from_secs(90),
        &|| ready(port),
    );
    eprintln!("ready {took:?} after the ServiceAccount and RBAC were created");
    assert!(read_log().contains("recovered"), "{}", read_log());
    let _ = child.kill();
    let _ = child.wait();
}

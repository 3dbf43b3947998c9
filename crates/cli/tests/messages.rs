//! Every command, given a broken input, fails with a sentence a person can act on: stderr is not empty, names
//! the input that is wrong, and holds no Rust debug dump (`Some(`, `Status {`, `Error {`, `kind: NotFound`).
//! No server is started: unreachable OpenBao and API servers are closed loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Fixture {
    dir: tempfile::TempDir,
    bao: String,
}

impl Fixture {
    /// A valid mesh file of two clusters whose API servers and OpenBao are closed ports.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a", "b"] {
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\n\
                 contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\n\
                 users:\n- name: {name}\n  user:\n    token: not-a-real-token\n",
                closed_port()
            );
            std::fs::write(dir.path().join(format!("kubeconfig-{name}")), kubeconfig)
                .expect("kubeconfig");
        }
        let fixture = Fixture {
            bao: format!("http://127.0.0.1:{}", closed_port()),
            dir,
        };
        fixture.write("mesh.yaml", &fixture.mesh("kubeconfig-a"));
        fixture
    }

    fn mesh(&self, kubeconfig_a: &str) -> String {
        format!(
            "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: mesh1\nclusters:\n\
             - name: cluster-a\n  kubeconfig: {kubeconfig_a}\n  network: network1\n\
             - name: cluster-b\n  kubeconfig: kubeconfig-b\n  network: network2\n"
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Runs `meshtrust ARGS` with this fixture's OpenBao and at most 30 s; returns (success, stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
            .args(args)
            .current_dir(self.dir.path())
            .env("BAO_ADDR", &self.bao)
            .env("BAO_TOKEN", "not-a-real-token")
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", self.path("no-such-kubeconfig"))
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("MESHTRUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run meshtrust");
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("meshtrust {args:?} did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

/// The first debug-dump marker in `text`, if any.
fn debug_dump(text: &str) -> Option<String> {
    for marker in [
        "Some(",
        "None,",
        "Status {",
        "Error {",
        "Os {",
        "Custom {",
        "ErrorResponse {",
    ] {
        if text.contains(marker) {
            return Some(marker.to_string());
        }
    }
    // `kind: NotFound,` as std's and kube's Debug print it; a quoted YAML line such as `kind: Mesh` is fine.
    text.match_indices("kind: ").find_map(|(i, _)| {
        let rest = &text[i + 6..];
        let ident: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let after = &rest[ident.len()..];
        let dump = ident.starts_with(|c: char| c.is_ascii_uppercase())
            && (after.starts_with(',') || after.starts_with(" }"));
        dump.then(|| format!("kind: {ident}"))
    })
}

/// Runs a broken case and checks its message. `names` must appear in stderr.
fn check(fixture: &Fixture, args: &[&str], names: &str) {
    let (ok, stderr) = fixture.run(args);
    assert!(!ok, "meshtrust {args:?} should fail; stderr:\n{stderr}");
    assert!(
        !stderr.trim().is_empty(),
        "meshtrust {args:?}: empty stderr"
    );
    if let Some(marker) = debug_dump(&stderr) {
        panic!("meshtrust {args:?}: a debug dump ({marker}) in:\n{stderr}");
    }
    assert!(
        stderr.contains(names),
        "meshtrust {args:?}: the message does not name {names:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "meshtrust {args:?} panicked:\n{stderr}"
    );
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn a_missing_or_broken_mesh_file_is_named_by_every_command_that_reads_it() {
    let f = Fixture::new();
    let missing = s(&f.path("missing/mesh.yaml"));
    let broken = s(&f.write(
        "broken.yaml",
        "apiVersion: meshtrust.dev/v1\nkind: Mess\nclusters: 3\n",
    ));
    let not_yaml = s(&f.write("garbage.yaml", "\u{0}\u{1}{{{: ::"));
    let dir = s(f.dir.path());
    let commands: [&[&str]; 10] = [
        &["plan"],
        &["apply"],
        &["verify"],
        &["status"],
        &["render", "gitops", "--flavor", "argocd"],
        &["render", "agent", "--cluster", "cluster-a"],
        &["render", "remote-secret", "--cluster", "cluster-a"],
        &["ca", "rotate-root"],
        &["bao", "policies"],
        &["agent", "--cluster", "cluster-a"],
    ];
    for command in commands {
        for mesh in [&missing, &broken, &not_yaml, &dir] {
            let mut args = command.to_vec();
            args.extend(["--mesh", mesh]);
            check(&f, &args, mesh);
        }
    }
}

#[test]
fn an_unknown_cluster_is_named() {
    let f = Fixture::new();
    for command in [
        &["render", "agent", "--cluster", "nope"][..],
        &["render", "remote-secret", "--cluster", "nope"],
        &["bao", "policies", "--cluster", "nope"],
        &["agent", "--cluster", "nope"],
    ] {
        check(&f, command, "nope");
    }
}

#[test]
fn an_unreachable_openbao_is_named_with_its_address() {
    let f = Fixture::new();
    let address = f.bao.clone();
    for command in [
        &["plan"][..],
        &["apply"],
        &["verify"],
        &["status"],
        &["ca", "rotate-root"],
        &["render", "remote-secret", "--cluster", "cluster-a"],
    ] {
        check(&f, command, &address);
    }
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let f = Fixture::new();
    f.write("mesh.yaml", &f.mesh("kubeconfig-gone"));
    for command in [
        &["plan"][..],
        &["apply"],
        &["verify"],
        &["status"],
        &["ca", "rotate-root"],
        &["agent", "--cluster", "cluster-a"],
    ] {
        check(&f, command, "kubeconfig-gone");
    }
    let gone = s(&f.path("gone/config"));
    check(&f, &["init", "--kubeconfig", &gone, "--out", "-"], &gone);
}

#[test]
fn bad_arguments_of_init_man_and_completions_are_named() {
    let f = Fixture::new();
    let kubeconfig = s(&f.path("kubeconfig-a"));
    check(
        &f,
        &[
            "init",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "nope",
            "--out",
            "-",
        ],
        "nope",
    );
    let mesh = s(&f.path("mesh.yaml"));
    check(
        &f,
        &["init", "--kubeconfig", &kubeconfig, "--out", &mesh],
        &mesh,
    );
    let blocked = s(&f.path("mesh.yaml/man"));
    check(&f, &["man", "--out", &blocked], &blocked);
    check(&f, &["completions", "nosh"], "nosh");
}

#[test]
fn without_an_openbao_address_the_fix_is_named() {
    let f = Fixture::new();
    let (ok, stderr) = {
        let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
            .arg("plan")
            .current_dir(f.dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .env("BAO_TOKEN", "x")
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(!ok);
    assert!(stderr.contains("BAO_ADDR"), "{stderr}");
    assert_eq!(debug_dump(&stderr), None, "{stderr}");
}

#[test]
fn the_dump_detector_finds_dumps() {
    assert!(debug_dump("Status { status: Some(Failure) }").is_some());
    assert!(debug_dump("Os { code: 2, kind: NotFound }").is_some());
    assert!(debug_dump("x kind: NotFound, y").is_some());
    assert_eq!(debug_dump("2 | kind: Mess\n3 | clusters: 3"), None);
}

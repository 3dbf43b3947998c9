//! What an operator does first, against real servers: `meshtrust init` from kubeconfig contexts then `apply`
//! and `verify`; the agent run outside a cluster with no flag but `--listen`, which names the fix for a missing
//! ServiceAccount once and recovers when the files are applied; man pages.

mod support;

use std::path::Path;
use std::process::Command;

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

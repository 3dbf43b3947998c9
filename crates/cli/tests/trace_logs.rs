//! No key or token in any log line at trace level: `meshtrust apply` (then `verify` and `status`) against
//! real servers with `MESHTRUST_LOG=trace`, every captured stream searched for private-key PEM, the OpenBao
//! root token, every reader token published to KV and copied into clusters, and the cacerts key bodies.

mod support;

use std::process::Output;

use support::{Mesh, field};

fn traced(mesh: &Mesh, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(args)
        .arg("--mesh")
        .arg(&mesh.file)
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env("BAO_TOKEN", &mesh.env.bao.root_token)
        .env("MESHTRUST_LOG", "trace")
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .expect("run meshtrust")
}

/// The token of a reader kubeconfig (`token: <jwt>` line).
fn kubeconfig_token(kubeconfig: &str) -> Option<String> {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .map(|t| t.trim_matches('"').to_string())
}

/// Every secret the run could have logged: tokens from KV and from the clusters' remote secrets, and the
/// base64 lines of each cluster's CA key.
async fn secrets(mesh: &Mesh) -> Vec<(String, String)> {
    let mut out = vec![(
        "OpenBao root token".to_string(),
        mesh.env.bao.root_token.clone(),
    )];
    let names: Vec<String> = mesh.env.clusters.iter().map(|c| c.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let kv: serde_json::Value = serde_json::from_str(&mesh.bao(&[
            "kv",
            "get",
            "-format=json",
            &format!("secret/istio/remote-secrets/{name}"),
        ]))
        .expect("kv");
        let kubeconfig = kv["data"]["data"][name.as_str()]
            .as_str()
            .unwrap_or_default();
        let token = kubeconfig_token(kubeconfig).expect("published token");
        out.push((format!("{name}'s published reader token"), token));
        let key = field(&mesh.cacerts(i).await, "ca-key.pem");
        for line in key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            out.push((format!("{name}'s CA key"), line.to_string()));
        }
        for peer in names.iter().filter(|p| *p != name) {
            let secret = mesh
                .secret(
                    i,
                    "istio-system",
                    &meshtrust_core::istio::remote_secret_name(peer),
                )
                .await
                .expect("remote secret");
            let kubeconfig = field(&secret, peer);
            out.push((
                format!("{peer}'s token in {name}"),
                kubeconfig_token(&kubeconfig).expect("token"),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_hold_no_key_or_token() {
    let mesh = Mesh::start(2, "");
    let mut logs = Vec::new();
    for args in [&["apply"][..], &["verify"], &["status"], &["plan"]] {
        let out = traced(&mesh, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        logs.push((
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).to_string(),
        ));
        logs.push((
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).to_string(),
        ));
    }
    let total_lines: usize = logs.iter().map(|(_, l)| l.lines().count()).sum();
    assert!(
        total_lines > 100,
        "trace logging produced only {total_lines} lines; is MESHTRUST_LOG honoured?"
    );
    let mut secrets = secrets(&mesh).await;
    secrets.push(("a private key PEM header".into(), "PRIVATE KEY".into()));
    let mut leaks = Vec::new();
    for (command, log) in &logs {
        for (what, value) in &secrets {
            if let Some(line) = log.lines().find(|l| l.contains(value.as_str())) {
                leaks.push(format!(
                    "`meshtrust {command}` logged {what}: {}",
                    &line[..line.len().min(200)]
                ));
            }
        }
    }
    println!(
        "searched {total_lines} log lines for {} secrets",
        secrets.len()
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn importing_a_root_from_kv_logs_no_part_of_its_key() {
    let mesh = Mesh::start(1, "ca:\n  importRoot:\n    kvPath: istio/ca\n");
    let dir = mesh.env.dir();
    let (cert, key) = support::openssl_self_signed(
        dir,
        "root",
        "/CN=Root CA",
        "rsa:2048",
        30,
        &["basicConstraints=critical,CA:TRUE"],
    );
    mesh.bao(&[
        "kv",
        "put",
        "secret/istio/ca",
        &format!("root-cert.pem=@{}", cert.display()),
        &format!("key.pem=@{}", key.display()),
    ]);
    let key_lines: Vec<String> = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect();
    let mut logs = String::new();
    for args in [
        &["plan"][..],
        &["apply"],
        &["plan", "--destroy-imported-key"],
    ] {
        let out = traced(&mesh, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        logs.contains("imported KV secret/istio/ca"),
        "the import ran"
    );
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a private key PEM header was logged"
    );
    for line in &key_lines {
        assert!(
            !logs.contains(line.as_str()),
            "a line of the imported key was logged"
        );
    }
}

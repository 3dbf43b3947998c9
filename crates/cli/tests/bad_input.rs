//! The bad-input suite (issue 11): malformed mesh files, kubeconfigs, OpenBao answers and cacerts PEMs, each
//! fed to the real `meshtrust` binary. Every case must exit non-zero, name the input in its message, dump no
//! Rust debug structures and no key or token, finish in bounded time and memory, and write nothing.
//!
//! OpenBao answers come from a fake HTTP server on loopback written here; cases that need a cluster use the
//! real API server and OpenBao of `meshtrust-testenv`. At the end the test prints the table of cases.

mod bad_input_support;

use bad_input_support::cluster_cases::{
    EXEC_USER, TOKEN_USER, fake_api_server, kubeconfig, pem_corruptions, secret_versions, set_field,
};
use bad_input_support::fake_bao::{Answer, FakeBao};
use bad_input_support::{Case, Outcome, Run, mesh_cases, print_table};
use meshtrust_testenv::TestEnv;

const TOKEN: &str = "s.badinput-secret-token-7f3a9c";

/// A valid mesh file for one cluster, with `cluster_extra` appended to the cluster's entry.
fn valid_mesh(address: &str, cluster_extra: &str) -> String {
    format!(
        "apiVersion: meshtrust.dev/v1\nkind: Mesh\nopenbao:\n  address: {address}\nclusters:\n  - name: cluster-a\n    kubeconfig: kubeconfig-a\n{cluster_extra}"
    )
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: a\ncurrent-context: a\nusers:\n- name: a\n  user:\n    token: kube-secret-token-55e1\n";

fn kubeconfig_cases() -> Vec<Case> {
    let no_server = KUBECONFIG.replace(
        "    server: https://127.0.0.1:1\n",
        "    insecure-skip-tls-verify: true\n",
    );
    vec![
        Case::mesh_with_kubeconfig("kubeconfig: missing file", None, "kubeconfig-a"),
        Case::mesh_with_kubeconfig(
            "kubeconfig: not YAML",
            Some("clusters: [\n  - {"),
            "kubeconfig-a",
        ),
        Case::mesh_with_kubeconfig(
            "kubeconfig: wrong types",
            Some("clusters: 12\nusers: nope\n"),
            "kubeconfig-a",
        ),
        Case::mesh_with_kubeconfig("kubeconfig: no server", Some(&no_server), "kubeconfig-a"),
        Case::mesh_with_kubeconfig("kubeconfig: empty", Some(""), "kubeconfig-a"),
        Case::mesh_with_kubeconfig_extra(
            "kubeconfig: unknown context",
            KUBECONFIG,
            "    context: no-such-context\n",
            "no-such-context",
        ),
    ]
}

fn bao_cases() -> Vec<(&'static str, Answer)> {
    vec![
        ("OpenBao: HTML page, 200", Answer::Html200),
        ("OpenBao: {} with 200", Answer::EmptyObject200),
        ("OpenBao: stalled body", Answer::StalledBody),
        ("OpenBao: 64 MiB body, no length", Answer::HugeBody),
        ("OpenBao: 64 MiB Content-Length", Answer::HugeLength),
        ("OpenBao: 500 with JSON errors", Answer::ServerError),
        ("OpenBao: 500 with HTML", Answer::ServerErrorHtml),
        ("OpenBao: never answers", Answer::Hang),
        ("OpenBao: truncated JSON", Answer::TruncatedJson),
        ("OpenBao: JSON array", Answer::WrongJson),
        ("OpenBao: 403 permission denied", Answer::Forbidden),
        ("OpenBao: connection closed", Answer::Close),
        ("OpenBao: redirect elsewhere", Answer::Redirect),
    ]
}

#[test]
fn bad_inputs_are_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let mut outcomes: Vec<Outcome> = Vec::new();
    let unused = "http://127.0.0.1:9";
    for case in mesh_cases(&valid_mesh(unused, ""), KUBECONFIG) {
        outcomes.push(case.run(&Run::new(dir.path(), unused, TOKEN)));
    }
    for case in kubeconfig_cases() {
        outcomes.push(case.run(&Run::new(dir.path(), unused, TOKEN)));
    }
    for (name, answer) in bao_cases() {
        let fake = runtime.block_on(FakeBao::start(answer));
        let case = Case::mesh_text(name, &valid_mesh(&fake.address, ""), KUBECONFIG)
            .args(&["plan", "--openbao-only"])
            .needles(&["OpenBao", "sys/"]);
        outcomes.push(case.run(&Run::new(dir.path(), &fake.address, TOKEN)));
        let seen = fake.requests();
        assert!(
            seen.iter()
                .all(|r| r.starts_with("GET ") || r.starts_with("LIST ")),
            "{name}: meshtrust wrote to OpenBao after a bad answer: {seen:?}"
        );
        assert!(
            !fake.redirect_target_saw_token(),
            "{name}: the token followed a redirect"
        );
    }
    outcomes.push(
        Case::mesh_text(
            "OpenBao: nothing listening",
            &valid_mesh(unused, ""),
            KUBECONFIG,
        )
        .args(&["plan", "--openbao-only"])
        .needles(&["OpenBao", "127.0.0.1:9"])
        .run(&Run::new(dir.path(), unused, TOKEN)),
    );
    print_table(&outcomes);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.problems.is_empty()).collect();
    assert!(failed.is_empty(), "cases that misbehaved:\n{failed:#?}");
    assert!(outcomes.len() >= 40, "only {} cases", outcomes.len());
}

/// Kubeconfigs that fail only when used, then cacerts PEMs that `verify` must flag without writing anything.
#[test]
fn bad_cluster_inputs_are_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let env = TestEnv::builder()
        .clusters(1)
        .start()
        .expect("test environment");
    let dir = tempfile::tempdir().expect("tmp");
    let bao = env.bao.addr.clone();
    let root = env.bao.root_token.clone();
    let mut outcomes = Vec::new();
    let hung = runtime.block_on(fake_api_server(true));
    let html = runtime.block_on(fake_api_server(false));
    for (name, kc, needle) in [
        (
            "kubeconfig: exec plugin missing",
            kubeconfig(&env.clusters[0].server, EXEC_USER),
            "cluster-a",
        ),
        (
            "kubeconfig: API server hangs",
            kubeconfig(&hung, TOKEN_USER),
            hung.as_str(),
        ),
        (
            "kubeconfig: API server answers HTML",
            kubeconfig(&html, TOKEN_USER),
            "cluster-a",
        ),
    ] {
        let case = Case::mesh_text(name, &valid_mesh(&bao, ""), &kc).needles(&[needle]);
        outcomes.push(case.run(&Run::new(dir.path(), &bao, &root)));
    }
    // A real mesh of one cluster, then its cacerts corrupted one field at a time.
    let mesh = meshtrust_testenv::mesh_file(&env);
    let mesh_path = env.dir().join("mesh.yaml");
    std::fs::write(&mesh_path, &mesh).expect("write mesh");
    let applied = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["apply", "--mesh"])
        .arg(&mesh_path)
        .env("BAO_ADDR", &bao)
        .env("BAO_TOKEN", &root)
        .output()
        .expect("apply");
    assert!(
        applied.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let client = runtime.block_on(env.clusters[0].client()).expect("client");
    let original = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                client.clone(),
                "istio-system",
            )
            .get("cacerts"),
        )
        .expect("cacerts")
        .data
        .unwrap_or_default();
    for (name, field, value) in pem_corruptions(&original) {
        let mut data = original.clone();
        data.insert(
            field.to_string(),
            k8s_openapi::ByteString(value.into_bytes()),
        );
        runtime.block_on(set_field(&client, data));
        let before = runtime.block_on(secret_versions(&client));
        let mut case = Case::mesh_text(name, &mesh, "")
            .args(&["verify"])
            .needles(&["cacerts"]);
        case.kubeconfig = None;
        case.mesh = bad_input_support::MeshSource::Path(mesh_path.clone());
        let mut outcome = case.run(&Run::new(dir.path(), &bao, &root));
        if runtime.block_on(secret_versions(&client)) != before {
            outcome
                .problems
                .push("verify changed a Secret in istio-system".into());
        }
        outcomes.push(outcome);
    }
    runtime.block_on(set_field(&client, original));
    print_table(&outcomes);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.problems.is_empty()).collect();
    assert!(failed.is_empty(), "cases that misbehaved:\n{failed:#?}");
}

//! The foundation's promises, shown against the real servers: TokenRequest + OpenBao Kubernetes auth per cluster,
//! RBAC that refuses anonymous requests, and no process left behind.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use meshtrust_testenv::{TestCluster, TestEnv};
use serde_json::{Value, json};

async fn service_account_token(cluster: &TestCluster, name: &str) -> String {
    cluster
        .create_login_service_account("default", name)
        .await
        .expect("service account");
    cluster
        .request_token("default", name)
        .await
        .expect("TokenRequest")
}

async fn bao(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{}/v1/{path}", env.bao.addr))
        .header("X-Vault-Token", &env.bao.root_token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("OpenBao answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kubernetes_auth_accepts_own_cluster_tokens_and_rejects_peers() {
    let env = TestEnv::builder()
        .clusters(2)
        .start()
        .expect("test environment");
    let a = &env.clusters[0];
    let b = &env.clusters[1];

    let (s, _) = bao(
        &env,
        reqwest::Method::POST,
        "sys/auth/kubernetes_cluster_a",
        Some(json!({"type": "kubernetes"})),
    )
    .await;
    assert_eq!(s, 204, "enable auth/kubernetes_cluster_a");
    let (s, body) = bao(
        &env,
        reqwest::Method::POST,
        "auth/kubernetes_cluster_a/config",
        Some(json!({"kubernetes_host": a.server, "kubernetes_ca_cert": a.ca_pem, "disable_local_ca_jwt": true})),
    )
    .await;
    assert_eq!(s, 204, "configure auth mount: {body}");
    let (s, _) = bao(
        &env,
        reqwest::Method::PUT,
        "sys/policies/acl/agent-cluster-a",
        Some(json!({"policy": "path \"secret/data/x\" { capabilities = [\"read\"] }"})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, body) = bao(
        &env,
        reqwest::Method::POST,
        "auth/kubernetes_cluster_a/role/agent",
        Some(json!({"bound_service_account_names": ["meshtrust-agent"], "bound_service_account_namespaces": ["default"], "token_policies": ["agent-cluster-a"], "token_ttl": "10m"})),
    )
    .await;
    assert_eq!(s, 204, "create role: {body}");

    let token_a = service_account_token(a, "meshtrust-agent").await;
    let (s, body) = bao(
        &env,
        reqwest::Method::POST,
        "auth/kubernetes_cluster_a/login",
        Some(json!({"role": "agent", "jwt": token_a})),
    )
    .await;
    assert_eq!(s, 200, "login with cluster-a's token: {body}");
    let policies = body["auth"]["policies"].as_array().expect("policies");
    assert!(
        policies.iter().any(|p| p == "agent-cluster-a"),
        "policies: {policies:?}"
    );
    assert_eq!(
        body["auth"]["metadata"]["service_account_name"],
        "meshtrust-agent"
    );

    // The same ServiceAccount name in cluster-b: its token is signed by another issuer key, so cluster-a's
    // TokenReview refuses it and OpenBao denies the login.
    let token_b = service_account_token(b, "meshtrust-agent").await;
    let (s, body) = bao(
        &env,
        reqwest::Method::POST,
        "auth/kubernetes_cluster_a/login",
        Some(json!({"role": "agent", "jwt": token_b})),
    )
    .await;
    assert_eq!(
        s, 403,
        "cluster-b's token must be rejected by cluster-a's mount: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_round_trip_and_anonymous_requests_are_refused() {
    let env = TestEnv::builder()
        .clusters(2)
        .start()
        .expect("test environment");
    let b = &env.clusters[1];
    let secrets: Api<Secret> = Api::namespaced(b.client().await.expect("client"), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "roundtrip"},
        "stringData": {"hello": "world"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let back = secrets.get("roundtrip").await.expect("read secret");
    let data = back.data.expect("data");
    assert_eq!(data["hello"].0, b"world");

    let ca = reqwest::Certificate::from_pem(b.ca_pem.as_bytes()).expect("ca");
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    let status = anonymous
        .get(format!("{}/api/v1/namespaces/default/secrets", b.server))
        .send()
        .await
        .expect("API server answers")
        .status()
        .as_u16();
    assert!(
        status == 401 || status == 403,
        "anonymous list of secrets must be refused, got {status}"
    );
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

#[test]
fn dropping_or_panicking_leaves_no_process_behind() {
    let env = TestEnv::builder()
        .clusters(1)
        .start()
        .expect("test environment");
    let pids = env.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| alive(*p)));
    drop(env);
    assert!(pids.iter().all(|p| !alive(*p)), "processes left after drop");

    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let env = TestEnv::builder()
            .clusters(1)
            .start()
            .expect("test environment");
        tx.send(env.pids()).expect("send pids");
        panic!("a test that fails while the environment runs");
    });
    assert!(handle.join().is_err());
    let pids = rx.recv_timeout(Duration::from_secs(1)).expect("pids");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "processes left after a panic"
    );
}

#[test]
fn missing_binary_names_the_build_command() {
    // Point the cache somewhere empty: the error must say what to run.
    let err = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust-devenv"))
        .args(["serve", "--clusters", "1", "--dir"])
        .arg(std::env::temp_dir().join("meshtrust-missing-bin"))
        .env("MESHTRUST_CACHE", "/nonexistent/meshtrust-cache")
        .output()
        .expect("run devenv");
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(!err.status.success());
    assert!(stderr.contains("scripts/build-k8s"), "stderr: {stderr}");
}

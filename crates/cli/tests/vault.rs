//! HashiCorp Vault community edition (1.21.0, `scripts/build-vault`) where it differs from OpenBao, each
//! difference against the real Vault: no namespaces, read-your-writes headers refused, a JSON-limit 500, a
//! standby's redirect, and the `VAULT_*` variables. The rest of the suite runs on Vault as a whole with
//! `MESHTRUST_STORE=vault` (scripts/test does).

mod support;

use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};
use meshtrust_core::ports::{ErrorKind, OpenBao};
use meshtrust_testenv::{StoreKind, TestEnv};
use reqwest::Method;
use support::Mesh;
use support::header_proxy::{Add, HeaderProxy};

fn client(address: &str, nodes: &[&str], token: &str) -> OpenBaoClient {
    OpenBaoClient::new(OpenBaoConfig {
        address: address.to_string(),
        addresses: nodes.iter().map(|n| n.to_string()).collect(),
        token: token.to_string(),
        namespace: None,
        ca_cert_pem: None,
        allow_insecure_http: false,
    })
    .expect("client")
}

/// `meshtrust <args>` with the Vault CLI's variables only.
fn meshtrust_with_vault_env(mesh: &Mesh, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(args)
        .arg("--mesh")
        .arg(&mesh.file)
        .env_remove("BAO_ADDR")
        .env_remove("BAO_ADDRS")
        .env_remove("BAO_TOKEN")
        .env_remove("BAO_NAMESPACE")
        .env("VAULT_ADDR", &mesh.env.bao.addr)
        .env("VAULT_TOKEN", &mesh.env.bao.root_token)
        .output()
        .expect("run meshtrust")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_on_community_vault_is_refused_before_anything_is_written() {
    let mesh = Mesh::start_on(StoreKind::Vault, 1, "  namespace: production\n");
    for args in [["apply"].as_slice(), &["plan"]] {
        let out = meshtrust_with_vault_env(&mesh, args);
        let said = text(&out);
        assert!(!out.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("HashiCorp Vault 1.21.0 (community edition)")
                && said.contains("Remove openbao.namespace"),
            "{args:?}: {said}"
        );
    }
    let mounts = mesh.bao(&["secrets", "list", "-format=json"]);
    assert!(!mounts.contains("pki/"), "nothing mounted: {mounts}");
    assert!(mesh.secret(0, "istio-system", "cacerts").await.is_none());

    // Without the namespace, the Vault CLI's variables alone are enough.
    mesh.rewrite("");
    let out = meshtrust_with_vault_env(&mesh, &["apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = meshtrust_with_vault_env(&mesh, &["status"]);
    assert!(
        text(&status).contains("HashiCorp Vault 1.21.0 (community edition)"),
        "{}",
        text(&status)
    );
    let verify = meshtrust_with_vault_env(&mesh, &["verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_vaults_json_limits_is_an_error_naming_the_request_not_an_outage() {
    let env = TestEnv::builder()
        .clusters(0)
        .store(StoreKind::Vault)
        .start()
        .expect("test environment");
    let vault = client(&env.bao.addr, &[], &env.bao.root_token);
    // One string over Vault's 1 MiB limit: a policy for a very large mesh would be one.
    let policy = "path \"secret/data/x\" {\n  capabilities = [\"read\"]\n}\n".repeat(24_000);
    let e = vault
        .write_policy("meshtrust-too-big", &policy)
        .await
        .expect_err("over the limit");
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    let said = e.to_string();
    assert!(
        said.contains("POST sys/policies/acl/meshtrust-too-big")
            && said.contains("too large or too complex"),
        "{said}"
    );
    assert_eq!(
        vault
            .read_policy("meshtrust-too-big")
            .await
            .expect("read back"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_headers_stop_after_vault_refuses_them() {
    let env = TestEnv::builder()
        .clusters(0)
        .store(StoreKind::Vault)
        .start()
        .expect("test environment");
    // Answers that carry an index, as OpenBao's do: the client then asks for read-your-writes, which Vault
    // refuses with 400 once; the request is sent again without the headers, and no later one carries them.
    let proxy = HeaderProxy::start(&env.bao.addr, Add::Answer("X-Vault-Index", "v1:fake"));
    let vault = client(&proxy.addr, &[], &env.bao.root_token);
    vault
        .write_policy(
            "meshtrust-ryw",
            "path \"x\" {\n  capabilities = [\"read\"]\n}\n",
        )
        .await
        .expect("write");
    let before = vault.request_count();
    let read = vault.read_policy("meshtrust-ryw").await.expect("read");
    assert!(read.is_some());
    assert_eq!(
        vault.request_count() - before,
        2,
        "one refused read, one without headers"
    );
    let before = vault.request_count();
    vault.read_policy("meshtrust-ryw").await.expect("read");
    assert_eq!(vault.request_count() - before, 1, "headers stay off");
}

/// Synchronous: the HA cluster's bootstrap probes block, so it starts outside the async runtime.
#[test]
fn a_standby_redirect_is_followed_only_to_a_configured_node() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let env = TestEnv::builder()
        .clusters(0)
        .openbao_ha()
        .store(StoreKind::Vault)
        .start()
        .expect("test environment");
    let cluster = env.bao_ha.as_ref().expect("Vault HA");
    let active = cluster
        .wait_for_leader(std::time::Duration::from_secs(30))
        .expect("leader");
    let standby = (active + 1) % cluster.nodes.len();
    let active_addr = cluster.nodes[active].addr.clone();
    // Asked not to forward, a real Vault standby answers 307 to the active node's api_addr.
    let proxy = HeaderProxy::start(
        &cluster.nodes[standby].addr,
        Add::Request("X-Vault-No-Request-Forwarding", "true"),
    );

    let alone = client(&proxy.addr, &[&proxy.addr], &cluster.root_token);
    let e = runtime
        .block_on(alone.call_ok(Method::GET, "sys/mounts", None))
        .expect_err("the active node is not configured");
    let said = e.to_string();
    assert!(
        said.contains(&active_addr)
            && said.contains("not sent there")
            && said.contains("BAO_ADDRS"),
        "{said}"
    );
    assert_eq!(alone.request_count(), 1, "nothing went to the active node");

    let both = client(
        &proxy.addr,
        &[&proxy.addr, &active_addr],
        &cluster.root_token,
    );
    runtime
        .block_on(both.call_ok(Method::GET, "sys/mounts", None))
        .expect("followed to the configured active node");
    assert_eq!(both.request_count(), 2);
    assert_eq!(
        both.address(),
        active_addr,
        "the client stays on the active node"
    );
    assert_eq!(proxy.forwarded(), 2);
}

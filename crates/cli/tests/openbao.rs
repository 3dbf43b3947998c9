//! OpenBao as code against the real OpenBao and API servers: the namespace, mounts, one Kubernetes auth mount
//! per cluster, least-privilege policies that OpenBao itself enforces, drift repair and the admin policy.

mod support;

use futures::StreamExt;
use meshtrust_core::mesh::{KeySpec, KeyType};
use meshtrust_pki::{generate_key, intermediate_csr};
use serde_json::{Value, json};
use support::Mesh;

/// Logs in as cluster `index`'s agent: a real ServiceAccount token from TokenRequest, exchanged at
/// `auth/<mount>/login` for an OpenBao token.
async fn agent_token(mesh: &Mesh, index: usize, namespace: Option<&str>) -> String {
    let cluster = &mesh.env.clusters[index];
    cluster
        .create_login_service_account("istio-system", "meshtrust-agent")
        .await
        .expect("service account");
    let jwt = cluster
        .request_token("istio-system", "meshtrust-agent")
        .await
        .expect("token");
    let (status, body) = call(
        mesh,
        None,
        namespace,
        "POST",
        &format!("auth/kubernetes_{}/login", cluster.name.replace('-', "_")),
        Some(json!({"role": "meshtrust-agent", "jwt": jwt})),
    )
    .await;
    assert_eq!(status, 200, "agent login: {body}");
    body["auth"]["client_token"]
        .as_str()
        .expect("client token")
        .to_string()
}

async fn call(
    mesh: &Mesh,
    token: Option<&str>,
    namespace: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("{}/v1/{path}", mesh.env.bao.addr));
    req = req.header("X-Vault-Token", token.unwrap_or(&mesh.env.bao.root_token));
    if let Some(ns) = namespace {
        req = req.header("X-Vault-Namespace", ns);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("OpenBao answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// (what, method, path, body, namespace)
type Denial<'a> = (&'a str, &'a str, &'a str, Option<Value>, Option<&'a str>);

fn sign_body(cn: &str, extra: Value) -> Value {
    let key = generate_key(KeySpec {
        key_type: KeyType::Ec,
        bits: 256,
    })
    .expect("key");
    let csr = intermediate_csr(&key, cn, "Istio").expect("csr");
    let mut body = json!({"csr": csr, "common_name": cn, "organization": "Istio", "ttl": "8760h", "max_path_length": "0", "exclude_cn_from_sans": "true", "format": "pem"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_can_do_exactly_its_job_and_openbao_refuses_the_rest() {
    let ns = Some("production");
    let mesh = Mesh::start(
        2,
        "meshID: mesh1\nopenbao:\n  namespace: production\n  kvMount: kv\n",
    );
    // mesh_file_with puts its own openbao: section first; the later key would clash, so rewrite cleanly.
    let text = std::fs::read_to_string(&mesh.file).expect("mesh");
    let text = text.replacen("meshID: local-mesh\n", "", 1).replacen(
        &format!("openbao:\n  address: {}\n", mesh.env.bao.addr),
        "",
        1,
    );
    std::fs::write(&mesh.file, text).expect("mesh");
    mesh.ok(&["apply"]);
    let listed = mesh.bao(&["namespace", "list", "-format=json"]);
    assert!(listed.contains("production"), "{listed}");

    let a = agent_token(&mesh, 0, ns).await;
    let cn_a = "cluster-a intermediate CA (mesh1)";
    let cn_b = "cluster-b intermediate CA (mesh1)";
    let sign = "pki/issuer/meshtrust-root-1/sign-intermediate";

    // Its job.
    let (s, body) = call(
        &mesh,
        Some(&a),
        ns,
        "POST",
        sign,
        Some(sign_body(cn_a, json!({}))),
    )
    .await;
    assert_eq!(s, 200, "sign own intermediate: {body}");
    let (s, body) = call(
        &mesh,
        Some(&a),
        ns,
        "POST",
        "kv/data/istio/remote-secrets/cluster-a",
        Some(json!({"data": {"cluster-a": "kubeconfig"}})),
    )
    .await;
    assert_eq!(s, 200, "publish own remote secret: {body}");
    let (s, _) = call(
        &mesh,
        None,
        ns,
        "POST",
        "kv/data/istio/remote-secrets/cluster-b",
        Some(json!({"data": {"cluster-b": "kubeconfig"}})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &mesh,
        Some(&a),
        ns,
        "GET",
        "kv/data/istio/remote-secrets/cluster-b",
        None,
    )
    .await;
    assert_eq!(s, 200, "read a peer's remote secret");
    let (s, _) = call(
        &mesh,
        Some(&a),
        ns,
        "POST",
        "kv/data/istio/meshtrust-index",
        Some(json!({"data": {"cluster-a": "1"}})),
    )
    .await;
    assert_eq!(s, 200, "bump the change index");
    let (s, body) = call(
        &mesh,
        Some(&a),
        ns,
        "POST",
        "kv/data/istio/meshtrust-trust/cluster-a",
        Some(json!({"data": {"trust": "{}"}})),
    )
    .await;
    assert_eq!(s, 200, "publish own trust facts: {body}");
    let (s, _) = call(
        &mesh,
        None,
        ns,
        "POST",
        "kv/data/istio/meshtrust-trust/cluster-b",
        Some(json!({"data": {"trust": "{}"}})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &mesh,
        Some(&a),
        ns,
        "GET",
        "kv/data/istio/meshtrust-trust/cluster-b",
        None,
    )
    .await;
    assert_eq!(s, 200, "read a peer's trust facts");
    // The periodic full re-read: every entry's version in one listing (metadata only, no data).
    for folder in ["istio/remote-secrets", "istio/meshtrust-trust"] {
        let (s, body) = call(
            &mesh,
            Some(&a),
            ns,
            "LIST",
            &format!("kv/detailed-metadata/{folder}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "list {folder}'s versions: {body}");
        assert!(
            body["data"]["key_info"]["cluster-b"]["current_version"]
                .as_u64()
                .is_some_and(|v| v >= 1),
            "{body}"
        );
    }
    let (s, _) = call(&mesh, Some(&a), ns, "LIST", "pki/issuers", None).await;
    assert_eq!(s, 200, "list roots");

    // Everything else, refused by OpenBao itself.
    let _ = call(&mesh, None, None, "POST", "sys/namespaces/other", None).await;
    let denials: Vec<Denial> = vec![
        (
            "sign cluster-b's intermediate",
            "POST",
            sign,
            Some(sign_body(cn_b, json!({}))),
            ns,
        ),
        (
            "sign with use_csr_values",
            "POST",
            sign,
            Some(sign_body(cn_a, json!({"use_csr_values": true}))),
            ns,
        ),
        (
            "sign a CA that may sign CAs (path length 1)",
            "POST",
            sign,
            Some(sign_body(cn_a, json!({"max_path_length": 1}))),
            ns,
        ),
        (
            "sign with extra SANs",
            "POST",
            sign,
            Some(sign_body(cn_a, json!({"alt_names": "evil.example"}))),
            ns,
        ),
        (
            "sign through the root's default path",
            "POST",
            "pki/root/sign-intermediate",
            Some(sign_body(cn_a, json!({}))),
            ns,
        ),
        (
            "write cluster-b's remote secret",
            "POST",
            "kv/data/istio/remote-secrets/cluster-b",
            Some(json!({"data": {"x": "y"}})),
            ns,
        ),
        (
            "write cluster-b's trust facts",
            "POST",
            "kv/data/istio/meshtrust-trust/cluster-b",
            Some(json!({"data": {"trust": "{}"}})),
            ns,
        ),
        (
            "delete its own remote secret's history",
            "DELETE",
            "kv/metadata/istio/remote-secrets/cluster-a",
            None,
            ns,
        ),
        (
            "read a CA bundle in KV",
            "GET",
            "kv/data/istio/ca",
            None,
            ns,
        ),
        (
            "write an arbitrary KV path",
            "POST",
            "kv/data/anything",
            Some(json!({"data": {"x": "y"}})),
            ns,
        ),
        (
            "change its own policy",
            "POST",
            "sys/policies/acl/meshtrust-agent-cluster-a",
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
            ns,
        ),
        (
            "change its own role",
            "POST",
            "auth/kubernetes_cluster_a/role/meshtrust-agent",
            Some(json!({"token_policies": ["root"]})),
            ns,
        ),
        (
            "mount a secrets engine",
            "POST",
            "sys/mounts/evil",
            Some(json!({"type": "kv"})),
            ns,
        ),
        (
            "tune the PKI mount",
            "POST",
            "sys/mounts/pki/tune",
            Some(json!({"max_lease_ttl": "999999h"})),
            ns,
        ),
        (
            "generate a root",
            "POST",
            "pki/issuers/generate/root/internal",
            Some(json!({"common_name": "evil", "key_type": "ec"})),
            ns,
        ),
        (
            "issue a leaf for an arbitrary name",
            "POST",
            "pki/issue/any",
            Some(json!({"common_name": "evil.example"})),
            ns,
        ),
        (
            "sign a leaf verbatim",
            "POST",
            "pki/sign-verbatim",
            Some(json!({"csr": "x"})),
            ns,
        ),
        (
            "read another namespace",
            "GET",
            "secret/data/anything",
            None,
            Some("other"),
        ),
        (
            "read the root namespace",
            "GET",
            "sys/policies/acl/default",
            None,
            None,
        ),
    ];
    let count = denials.len();
    for (what, method, path, body, namespace) in denials {
        let (s, body) = call(&mesh, Some(&a), namespace, method, path, body).await;
        assert_eq!(s, 403, "{what} must be denied by OpenBao, got {s}: {body}");
    }
    assert!(count >= 10);

    // A cluster-b token does not open cluster-a's mount.
    let b = agent_token(&mesh, 1, ns).await;
    let (s, _) = call(
        &mesh,
        Some(&b),
        ns,
        "POST",
        sign,
        Some(sign_body(cn_a, json!({}))),
    )
    .await;
    assert_eq!(
        s, 403,
        "cluster-b's agent cannot sign cluster-a's intermediate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_policy_is_drift_that_apply_repairs() {
    let mesh = Mesh::start(1, "");
    mesh.ok(&["apply"]);
    let dir = tempfile::tempdir().expect("tmp");
    let edited = dir.path().join("edited.hcl");
    std::fs::write(
        &edited,
        "path \"*\" {\n  capabilities = [\"sudo\", \"read\"]\n}\n",
    )
    .expect("write");
    mesh.bao(&[
        "policy",
        "write",
        "meshtrust-agent-cluster-a",
        edited.to_str().expect("path"),
    ]);
    let plan = mesh.json(&["plan"]);
    let changes = plan["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{plan}");
    assert_eq!(changes[0]["resource"], "policy meshtrust-agent-cluster-a");
    assert!(
        changes[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("drift")
    );
    mesh.ok(&["apply"]);
    let text = mesh.bao(&["policy", "read", "meshtrust-agent-cluster-a"]);
    assert!(text.contains("sign-intermediate"), "{text}");
    assert_eq!(
        mesh.json(&["apply"])["applied"],
        json!([]),
        "a second apply writes nothing"
    );
}

/// Each auth mount's description, as `bao auth list` shows it.
fn auth_descriptions(mesh: &Mesh) -> serde_json::Map<String, Value> {
    let list: Value =
        serde_json::from_str(&mesh.bao(&["auth", "list", "-format=json"])).expect("JSON");
    list.as_object()
        .expect("mounts")
        .iter()
        .map(|(path, m)| (path.clone(), m["description"].clone()))
        .collect()
}

/// Seed 000's Kubernetes auth for cluster `index`, made by hand before meshtrust: mount `kubernetes_<cluster>`
/// without a description, configured with a reviewer token, and the Vault Secrets Operator's role and policy
/// (the seed's own `bao` commands).
async fn seed_000_auth(mesh: &Mesh, index: usize) {
    let cluster = &mesh.env.clusters[index];
    let mount = format!("kubernetes_{}", cluster.name.replace('-', "_"));
    let client = cluster.client().await.expect("client");
    support::create_namespace(&client, "vault-secrets-operator").await;
    cluster
        .create_login_service_account("vault-secrets-operator", "vault-secrets-operator")
        .await
        .expect("VSO service account");
    let reviewer = cluster
        .request_token("vault-secrets-operator", "vault-secrets-operator")
        .await
        .expect("reviewer token");
    mesh.bao(&["auth", "enable", &format!("-path={mount}"), "kubernetes"]);
    let ca = mesh.env.dir().join(format!("{mount}-ca.pem"));
    std::fs::write(&ca, &cluster.ca_pem).expect("CA file");
    mesh.bao(&[
        "write",
        &format!("auth/{mount}/config"),
        &format!("kubernetes_host={}", cluster.server),
        &format!("kubernetes_ca_cert=@{}", ca.display()),
        &format!("token_reviewer_jwt={reviewer}"),
    ]);
    let policy = mesh.env.dir().join("vso.hcl");
    std::fs::write(
        &policy,
        "path \"secret/data/istio/remote-secrets/*\" {\n  capabilities = [\"read\"]\n}\n",
    )
    .expect("policy file");
    mesh.bao(&[
        "policy",
        "write",
        "vault-secrets-operator",
        policy.to_str().expect("path"),
    ]);
    mesh.bao(&[
        "write",
        &format!("auth/{mount}/role/vault-secrets-operator"),
        "bound_service_account_names=vault-secrets-operator",
        "bound_service_account_namespaces=vault-secrets-operator",
        "policies=vault-secrets-operator",
        "ttl=24h",
    ]);
}

/// The status of logging in as ServiceAccount `namespace/name` with `role` at cluster `index`'s mount.
async fn login_status(mesh: &Mesh, index: usize, namespace: &str, name: &str, role: &str) -> u16 {
    let cluster = &mesh.env.clusters[index];
    let jwt = cluster.request_token(namespace, name).await.expect("token");
    let mount = format!("kubernetes_{}", cluster.name.replace('-', "_"));
    let body = json!({"role": role, "jwt": jwt});
    call(
        mesh,
        None,
        None,
        "POST",
        &format!("auth/{mount}/login"),
        Some(body),
    )
    .await
    .0
}

fn roles(mesh: &Mesh, mount: &str) -> Vec<String> {
    let out = mesh.bao(&["list", "-format=json", &format!("auth/{mount}/role")]);
    serde_json::from_str(&out).expect("role list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000s_shared_auth_mounts_get_meshtrusts_role_and_lose_only_it() {
    let mesh = Mesh::start(2, "");
    for index in 0..2 {
        seed_000_auth(&mesh, index).await;
    }
    let text = mesh.ok(&["plan"]);
    assert!(
        text.contains(
            "NOTE: auth/kubernetes_cluster_a (cluster cluster-a) was not made by meshtrust"
        ) && text.contains("vault-secrets-operator"),
        "plan says what it found and leaves: {text}"
    );
    let plan = mesh.json(&["plan"]);
    let touched: Vec<&Value> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| {
            c["resource"]
                .as_str()
                .is_some_and(|r| r.contains("kubernetes_cluster"))
        })
        .collect();
    assert_eq!(touched.len(), 2, "only meshtrust's two roles: {plan}");
    assert!(
        touched
            .iter()
            .all(|c| c["action"]["type"] == "writeAgentRole"),
        "{plan}"
    );
    mesh.ok(&["apply"]);

    // The seed's mounts are as they were, with meshtrust's role beside VSO's; both log in.
    let described = auth_descriptions(&mesh);
    assert_eq!(described["kubernetes_cluster_a/"], "", "not renamed");
    let config: Value = serde_json::from_str(&mesh.bao(&[
        "read",
        "-format=json",
        "auth/kubernetes_cluster_a/config",
    ]))
    .expect("config");
    assert_eq!(
        config["data"]["token_reviewer_jwt_set"], true,
        "config not rewritten: {config}"
    );
    assert_eq!(
        roles(&mesh, "kubernetes_cluster_a"),
        ["meshtrust-agent", "vault-secrets-operator"]
    );
    for index in 0..2 {
        agent_token(&mesh, index, None).await;
        let vso = login_status(
            &mesh,
            index,
            "vault-secrets-operator",
            "vault-secrets-operator",
            "vault-secrets-operator",
        )
        .await;
        assert_eq!(vso, 200, "VSO still logs in at cluster {index}");
    }
    assert_eq!(
        mesh.json(&["apply"])["applied"],
        json!([]),
        "a second apply writes nothing"
    );

    // cluster-b leaves the mesh file: only meshtrust's role goes; the seed's mount and VSO's login stay.
    let text = std::fs::read_to_string(&mesh.file).expect("mesh");
    let start = text.find("  - name: cluster-b").expect("cluster-b block");
    std::fs::write(&mesh.file, &text[..start]).expect("mesh without cluster-b");
    let plan = mesh.ok(&["plan"]);
    assert!(
        plan.contains("- auth/kubernetes_cluster_b/role/meshtrust-agent"),
        "{plan}"
    );
    assert!(
        plan.contains("NOTE: auth/kubernetes_cluster_b (cluster cluster-b) stays"),
        "{plan}"
    );
    mesh.ok(&["apply"]);
    assert!(auth_descriptions(&mesh).contains_key("kubernetes_cluster_b/"));
    assert_eq!(
        roles(&mesh, "kubernetes_cluster_b"),
        ["vault-secrets-operator"]
    );
    let vso = login_status(
        &mesh,
        1,
        "vault-secrets-operator",
        "vault-secrets-operator",
        "vault-secrets-operator",
    )
    .await;
    assert_eq!(
        vso, 200,
        "VSO still logs in at the departed cluster's mount"
    );
    let agent = login_status(
        &mesh,
        1,
        "istio-system",
        "meshtrust-agent",
        "meshtrust-agent",
    )
    .await;
    assert_eq!(agent, 400, "the departed agent's role is gone");
    assert_eq!(
        mesh.json(&["apply"])["applied"],
        json!([]),
        "nothing left to remove"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_policy_alone_bootstraps_adds_and_removes_a_cluster_and_rotates_the_root() {
    let mesh = Mesh::start(3, "");
    let full = std::fs::read_to_string(&mesh.file).expect("mesh");
    let without_c = &full[..full.find("  - name: cluster-c").expect("cluster-c block")];
    std::fs::write(&mesh.file, without_c).expect("mesh without cluster-c");
    let admin = mesh.ok(&["bao", "policies", "--admin"]);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("admin.hcl");
    std::fs::write(&file, admin).expect("write");
    mesh.bao(&[
        "policy",
        "write",
        "meshtrust-admin",
        file.to_str().expect("path"),
    ]);
    let token = mesh.bao(&[
        "token",
        "create",
        "-policy=meshtrust-admin",
        "-no-default-policy",
        "-field=token",
    ]);
    let as_admin = |args: &[&str], what: &str| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
            .args(args)
            .arg("--mesh")
            .arg(&mesh.file)
            .env("BAO_ADDR", &mesh.env.bao.addr)
            .env("BAO_TOKEN", token.trim())
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{what} with only meshtrust-admin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let apply_as_admin = |what: &str| {
        as_admin(&["apply"], what);
    };
    apply_as_admin("first apply");
    assert!(mesh.ok(&["verify"]).contains("OK"));
    // The policy in force names only the clusters it was written for; apply extends it before using it.
    std::fs::write(&mesh.file, &full).expect("mesh with cluster-c");
    apply_as_admin("adding cluster-c");
    assert!(mesh.ok(&["verify"]).contains("OK"));
    std::fs::write(&mesh.file, without_c).expect("mesh without cluster-c");
    apply_as_admin("removing cluster-c");
    let auth = mesh.bao(&["auth", "list", "-format=json"]);
    assert!(!auth.contains("cluster_c"), "{auth}");
    // A root rotation, all three phases, needs nothing more either.
    let step = ["ca", "rotate-root", "--step"];
    assert!(as_admin(&step, "rotation phase 1").contains("phase 1"));
    assert!(as_admin(&step, "rotation phase 2").contains("phase 2"));
    assert!(
        as_admin(&["ca", "rotate-root", "--skip-dwell"], "rotation phase 3")
            .contains("Rotation complete")
    );
    assert!(mesh.ok(&["verify"]).contains("OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shared_root_mode_agents_read_but_never_write_the_bundle() {
    let mesh = Mesh::start(1, "ca:\n  mode: shared-root\n");
    mesh.ok(&["apply"]);
    let a = agent_token(&mesh, 0, None).await;
    let (s, _) = call(&mesh, Some(&a), None, "GET", "secret/data/istio/ca", None).await;
    assert_eq!(s, 200, "the sync role reads the bundle");
    let (s, _) = call(
        &mesh,
        Some(&a),
        None,
        "POST",
        "secret/data/istio/ca",
        Some(json!({"data": {"key.pem": "x"}})),
    )
    .await;
    assert_eq!(
        s, 403,
        "only the bootstrap (admin) may write it, unlike seed 001's sync role"
    );
    let (s, _) = call(
        &mesh,
        Some(&a),
        None,
        "DELETE",
        "secret/metadata/istio/ca",
        None,
    )
    .await;
    assert_eq!(s, 403);
}

/// `kv_list_metadata` against the real OpenBao: every entry's current version, soft deletes marked, sub-folders
/// left out, and more entries than one page in a few requests.
#[tokio::test]
async fn listing_versions_takes_a_request_per_page_whatever_the_number_of_entries() {
    use meshtrust_core::ports::OpenBao;
    use meshtrust_core::secret::SecretBytes;
    let mesh = Mesh::start(0, "");
    let bao = support::root_openbao(&mesh);
    let data = std::collections::BTreeMap::from([("k".to_string(), SecretBytes::new("v"))]);
    let entries = 300;
    futures::stream::iter(0..entries)
        .for_each_concurrent(16, |i| {
            let (bao, data) = (&bao, &data);
            async move {
                bao.kv_put("secret", &format!("list/e{i:03}"), data, 0)
                    .await
                    .expect("put");
            }
        })
        .await;
    bao.kv_put("secret", "list/e007", &data, 1)
        .await
        .expect("v2");
    bao.kv_put("secret", "list/sub/x", &data, 0)
        .await
        .expect("sub");
    let (s, _) = call(&mesh, None, None, "DELETE", "secret/data/list/e008", None).await;
    assert_eq!(s, 204, "soft delete");
    let before = bao.request_count();
    let listed = bao
        .kv_list_metadata("secret", "list")
        .await
        .expect("list")
        .expect("OpenBao offers detailed-metadata");
    assert_eq!(
        bao.request_count() - before,
        2,
        "300 entries in two pages of 256"
    );
    assert_eq!(listed.len(), entries, "every entry, no sub-folder");
    assert_eq!(listed["e007"].current_version, 2);
    assert!(listed["e008"].current_deleted);
    assert!(!listed["e009"].current_deleted);
    let empty = bao
        .kv_list_metadata("secret", "nothing-here")
        .await
        .expect("list");
    assert_eq!(empty.map(|m| m.len()), Some(0));
}

//! An attacker holding one cluster (cluster-b): its agent's real ServiceAccount token and its real OpenBao
//! login. Everything beyond the agent's job is refused by Kubernetes or OpenBao themselves, and afterwards
//! `meshtrust verify` passes and nothing of cluster-a changed. Real OpenBao and real API servers.

mod support;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::Mesh;

const AGENT: &str = "system:serviceaccount:istio-system:meshtrust-agent";

/// What `kubectl auth can-i --as system:serviceaccount:istio-system:meshtrust-agent` asks the API server.
async fn can_i(client: &kube::Client, verb: &str, resource: &str, name: Option<&str>) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let (group, resource, namespace) = match resource {
        "clusterroles" | "clusterrolebindings" => ("rbac.authorization.k8s.io", resource, None),
        "roles" | "rolebindings" => ("rbac.authorization.k8s.io", resource, Some("istio-system")),
        "leases" => ("coordination.k8s.io", resource, Some("istio-system")),
        "namespaces" => ("", resource, None),
        _ => ("", resource, Some("istio-system")),
    };
    let review = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(AGENT.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:istio-system".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                verb: Some(verb.into()),
                name: name.map(str::to_string),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// After the rendered deploy files are applied, the agent's ServiceAccount can do exactly its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_rbac_allows_its_job_and_nothing_that_escalates() {
    let mesh = Mesh::start(2, "");
    let client = mesh.env.clusters[1].client().await.expect("client");
    support::create_namespace(&client, "istio-system").await;
    support::deploy_agent(&mesh, 1).await;
    let reader_role = "istio-reader-clusterrole-istio-system";
    let allowed: &[(&str, &str, Option<&str>)] = &[
        ("get", "secrets", Some("cacerts")),
        ("list", "secrets", None),
        ("watch", "secrets", None),
        ("create", "secrets", None),
        ("update", "secrets", Some("cacerts")),
        ("update", "secrets", Some("istio-remote-secret-cluster-a")),
        ("delete", "secrets", Some("istio-remote-secret-cluster-a")),
        (
            "create",
            "serviceaccounts/token",
            Some("istio-reader-service-account"),
        ),
        (
            "get",
            "serviceaccounts",
            Some("istio-reader-service-account"),
        ),
        ("get", "leases", Some("meshtrust-agent")),
        ("update", "leases", Some("meshtrust-agent")),
        ("create", "leases", None),
        ("get", "namespaces", Some("istio-system")),
        ("get", "clusterroles", Some(reader_role)),
        ("get", "clusterrolebindings", Some(reader_role)),
    ];
    let denied: &[(&str, &str, Option<&str>)] = &[
        ("escalate", "clusterroles", Some(reader_role)),
        ("bind", "clusterroles", Some(reader_role)),
        ("update", "clusterroles", Some(reader_role)),
        ("patch", "clusterroles", Some(reader_role)),
        ("bind", "clusterroles", Some("cluster-admin")),
        ("create", "clusterroles", None),
        ("create", "clusterrolebindings", None),
        ("update", "clusterrolebindings", Some(reader_role)),
        ("create", "roles", None),
        ("create", "rolebindings", None),
        ("update", "secrets", Some("some-other-secret")),
        ("delete", "secrets", Some("some-other-secret")),
        ("patch", "secrets", Some("some-other-secret")),
        ("create", "serviceaccounts/token", Some("meshtrust-agent")),
        ("create", "serviceaccounts/token", Some("default")),
        ("create", "serviceaccounts", None),
        ("update", "leases", Some("another-lease")),
        ("delete", "leases", Some("meshtrust-agent")),
        ("create", "namespaces", None),
        ("get", "namespaces", Some("kube-system")),
    ];
    for (verb, resource, name) in allowed {
        assert!(
            can_i(&client, verb, resource, *name).await,
            "the agent must be able to {verb} {resource} {name:?}"
        );
    }
    for (verb, resource, name) in denied {
        assert!(
            !can_i(&client, verb, resource, *name).await,
            "the agent must not be able to {verb} {resource} {name:?}"
        );
    }
    eprintln!(
        "SubjectAccessReview: {} rights allowed, {} refused",
        allowed.len(),
        denied.len()
    );
}

/// A kube client that authenticates as cluster `index`'s agent, with a real TokenRequest token.
async fn agent_client(mesh: &Mesh, index: usize) -> kube::Client {
    let cluster = &mesh.env.clusters[index];
    let token = cluster
        .request_token("istio-system", "meshtrust-agent")
        .await
        .expect("agent token");
    let path = mesh.env.dir().join(format!("agent-token-{index}"));
    std::fs::write(&path, token).expect("token file");
    let mut config = cluster.config().await.expect("config");
    config.auth_info = kube::config::AuthInfo {
        token_file: Some(path.display().to_string()),
        ..Default::default()
    };
    kube::Client::try_from(config).expect("agent client")
}

fn status(result: Result<impl Sized, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("not an API answer: {e}"),
    }
}

/// The attempts on Kubernetes with the agent's own token: each answered 403 by the API server.
async fn kubernetes_attacks(mesh: &Mesh) {
    let agent = agent_client(mesh, 1).await;
    let reader_role = "istio-reader-clusterrole-istio-system";
    let roles = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(agent.clone());
    let bindings = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(agent.clone());
    let everything = json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let escalate = roles
        .patch(
            reader_role,
            &PatchParams::default(),
            &Patch::Merge(&everything),
        )
        .await;
    assert_eq!(status(escalate), 403, "rewrite the reader role to '*'");
    let new_role: k8s_openapi::api::rbac::v1::ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "evil"}, "rules": everything["rules"]}))
            .expect("role");
    assert_eq!(
        status(roles.create(&PostParams::default(), &new_role).await),
        403,
        "create a ClusterRole"
    );
    for role in [reader_role, "cluster-admin"] {
        let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("evil-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "meshtrust-agent", "namespace": "istio-system"}],
        }))
        .expect("binding");
        assert_eq!(
            status(bindings.create(&PostParams::default(), &binding).await),
            403,
            "bind {role} with a ClusterRoleBinding"
        );
    }
    let secrets = Api::<Secret>::namespaced(agent.clone(), "istio-system");
    assert_eq!(
        status(
            secrets
                .delete("not-meshtrusts", &DeleteParams::default())
                .await
        ),
        403,
        "delete a Secret it does not own"
    );
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(agent, "istio-system");
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .expect("token request");
    assert_eq!(
        status(
            sas.create_token_request("meshtrust-agent", &PostParams::default(), &request)
                .await
        ),
        403,
        "mint a token for another ServiceAccount"
    );
}

/// A request to OpenBao with `token`; the status and the JSON answer.
async fn call(
    mesh: &Mesh,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/v1/{path}", mesh.env.bao.addr))
        .header("X-Vault-Token", token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("OpenBao answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// cluster-b's agent logs in as it does in production: a TokenRequest token exchanged at its auth mount.
async fn agent_login(mesh: &Mesh) -> String {
    let jwt = mesh.env.clusters[1]
        .request_token("istio-system", "meshtrust-agent")
        .await
        .expect("token");
    let (status, body) = call(
        mesh,
        "",
        "POST",
        "auth/kubernetes_cluster_b/login",
        Some(json!({"role": "meshtrust-agent", "jwt": jwt})),
    )
    .await;
    assert_eq!(status, 200, "agent login: {body}");
    body["auth"]["client_token"]
        .as_str()
        .expect("client token")
        .to_string()
}

/// A well-formed sign-intermediate request for `cn`, as meshtrust sends it, with `extra` fields changed
/// (`null` removes one).
fn sign_body(cn: &str, extra: Value) -> Value {
    let key = meshtrust_pki::generate_key(meshtrust_core::mesh::KeySpec {
        key_type: meshtrust_core::mesh::KeyType::Ec,
        bits: 256,
    })
    .expect("key");
    let csr = meshtrust_pki::intermediate_csr(&key, cn, "Istio").expect("csr");
    let mut body = json!({"csr": csr, "common_name": cn, "organization": "Istio", "ttl": "8760h", "max_path_length": "0", "exclude_cn_from_sans": "true", "format": "pem"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    body
}

/// The attempts on OpenBao with cluster-b's real agent login: each answered 403 by OpenBao itself.
async fn openbao_attacks(mesh: &Mesh, token: &str) {
    let own = "cluster-b intermediate CA (local-mesh)";
    let sign = "pki/issuer/meshtrust-root-1/sign-intermediate";
    // Its job still works: the denials below are about the request, not a broken login.
    let (s, body) = call(mesh, token, "POST", sign, Some(sign_body(own, json!({})))).await;
    assert_eq!(s, 200, "sign its own intermediate: {body}");
    // A foreign issuer in meshtrust's PKI mount, made with the root token.
    let (s, body) = call(
        mesh,
        &mesh.env.bao.root_token,
        "POST",
        "pki/root/generate/internal",
        Some(json!({"common_name": "foreign root", "issuer_name": "foreign", "key_type": "ec", "key_bits": 256, "ttl": "8760h"})),
    )
    .await;
    assert_eq!(s, 200, "a foreign issuer: {body}");
    let attempts: Vec<(&str, &str, Value)> = vec![
        (
            "write cluster-a's published entry",
            "secret/data/istio/remote-secrets/cluster-a",
            json!({"data": {"cluster-a": "attacker kubeconfig"}}),
        ),
        (
            "sign an intermediate with cluster-a's CN",
            sign,
            sign_body("cluster-a intermediate CA (local-mesh)", json!({})),
        ),
        (
            "sign with max_path_length omitted",
            sign,
            sign_body(own, json!({"max_path_length": null})),
        ),
        (
            "sign with max_path_length 1",
            sign,
            sign_body(own, json!({"max_path_length": "1"})),
        ),
        (
            "sign with a 20-year TTL",
            sign,
            sign_body(own, json!({"ttl": "175200h"})),
        ),
        (
            "sign with the TTL omitted (the mount's default)",
            sign,
            sign_body(own, json!({"ttl": null})),
        ),
        (
            "sign through a non-meshtrust issuer",
            "pki/issuer/foreign/sign-intermediate",
            sign_body(own, json!({})),
        ),
        (
            "sign through the default issuer's path",
            "pki/root/sign-intermediate",
            sign_body(own, json!({})),
        ),
    ];
    for (what, path, body) in attempts.into_iter().chain(list_attacks(own, sign)) {
        let (s, answer) = call(mesh, token, "POST", path, Some(body)).await;
        assert_eq!(
            s, 403,
            "{what} must be refused by the store, got {s}: {answer}"
        );
    }
    for (what, body) in harmless_list_attempts(own) {
        let (s, answer) = call(mesh, token, "POST", sign, Some(body)).await;
        assert_harmless(what, s, &answer);
    }
}

/// Comma-joined strings and arrays that smuggle a value the policy does not allow next to one it does. Vault
/// (since 1.21) splits a string on commas and checks every piece, and checks every element of an array;
/// OpenBao compares the whole value. Both must refuse.
fn list_attacks<'a>(own: &str, sign: &'a str) -> Vec<(&'static str, &'a str, Value)> {
    let peer = "cluster-a intermediate CA (local-mesh)";
    vec![
        (
            "sign with common_name \"<own CN>,<peer CN>\"",
            sign,
            sign_body(own, json!({"common_name": format!("{own},{peer}")})),
        ),
        (
            "sign with common_name [<own CN>, <peer CN>]",
            sign,
            sign_body(own, json!({"common_name": [own, peer]})),
        ),
        (
            "sign with max_path_length \"0,1\"",
            sign,
            sign_body(own, json!({"max_path_length": "0,1"})),
        ),
        (
            "sign with max_path_length [\"0\", \"1\"]",
            sign,
            sign_body(own, json!({"max_path_length": ["0", "1"]})),
        ),
        (
            "sign with ttl \"8760h,175200h\"",
            sign,
            sign_body(own, json!({"ttl": "8760h,175200h"})),
        ),
        (
            "sign with organization \"Istio,cluster-a\"",
            sign,
            sign_body(own, json!({"organization": "Istio,cluster-a"})),
        ),
    ]
}

/// Lists made only of allowed values: Vault's policy lets them through, so the PKI engine must refuse them or
/// sign nothing beyond the agent's own job.
fn harmless_list_attempts(own: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "common_name \"<own CN>,<own CN>\"",
            sign_body(own, json!({"common_name": format!("{own},{own}")})),
        ),
        (
            "common_name [<own CN>]",
            sign_body(own, json!({"common_name": [own]})),
        ),
        (
            "max_path_length [\"0\"]",
            sign_body(own, json!({"max_path_length": ["0"]})),
        ),
        ("ttl [\"8760h\"]", sign_body(own, json!({"ttl": ["8760h"]}))),
        (
            "organization [\"Istio\", \"Istio\"]",
            sign_body(own, json!({"organization": ["Istio", "Istio"]})),
        ),
    ]
}

/// Refused (403 by the policy, 400 by the PKI engine), or a certificate that is still only cluster-b's own
/// intermediate: path length 0, no peer's name, the mesh's TTL.
fn assert_harmless(what: &str, status: u16, answer: &Value) {
    eprintln!("list attempt {what}: HTTP {status}");
    if status == 403 || status == 400 {
        return;
    }
    assert_eq!(status, 200, "{what}: {answer}");
    let pem = answer["data"]["certificate"].as_str().expect("certificate");
    let text = openssl_x509_text(pem);
    assert!(text.contains("pathlen:0"), "{what}: {text}");
    assert!(!text.contains("cluster-a"), "{what}: {text}");
    let cert = meshtrust_pki::parse_certs(pem, "signed").expect("parses");
    let days = (cert[0].facts.not_after - cert[0].facts.not_before) / 86_400;
    assert!(days <= 366, "{what}: {days} days");
}

fn openssl_x509_text(pem: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.pem");
    std::fs::write(&path, pem).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// resourceVersions of cluster-a's Secrets that meshtrust manages.
async fn cluster_a_versions(mesh: &Mesh) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in ["cacerts", "istio-remote-secret-cluster-b"] {
        let secret = mesh
            .secret(0, "istio-system", name)
            .await
            .unwrap_or_else(|| panic!("cluster-a has {name}"));
        out.push((
            name.to_string(),
            secret.metadata.resource_version.unwrap_or_default(),
        ));
    }
    out
}

/// The version and update time of cluster-a's published KV entry.
fn published_version(mesh: &Mesh) -> (Value, Value) {
    let text = mesh.bao(&[
        "kv",
        "metadata",
        "get",
        "-format=json",
        "secret/istio/remote-secrets/cluster-a",
    ]);
    let meta: Value = serde_json::from_str(&text).expect("metadata JSON");
    (
        meta["data"]["current_version"].clone(),
        meta["data"]["updated_time"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_holding_cluster_b_cannot_touch_cluster_a_or_escalate() {
    let mesh = Mesh::start(2, "");
    // cluster-b is deployed as in production: the rendered deploy files, then the admin's apply.
    let client_b = mesh.env.clusters[1].client().await.expect("client");
    support::create_namespace(&client_b, "istio-system").await;
    support::deploy_agent(&mesh, 1).await;
    mesh.ok(&["apply"]);
    let before = cluster_a_versions(&mesh).await;
    let published = published_version(&mesh);

    kubernetes_attacks(&mesh).await;
    let token = agent_login(&mesh).await;
    openbao_attacks(&mesh, &token).await;
    // TODO(index poisoning, the integrator's part of issue 11): traversal keys, garbage and removing cluster-a
    // from whatever shared index exists belong here once the membership redesign lands.

    let verify = mesh.meshtrust(&["verify"]);
    assert!(
        verify.status.success(),
        "verify after the attacks:
{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert_eq!(
        cluster_a_versions(&mesh).await,
        before,
        "cluster-a's Secrets are untouched"
    );
    assert_eq!(
        published_version(&mesh),
        published,
        "cluster-a's published entry is untouched"
    );
}

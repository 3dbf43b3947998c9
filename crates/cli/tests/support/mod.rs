//! Helpers for the CLI's tests against real servers: a test environment, a mesh file for it, and the real
//! `meshtrust` binary run with the environment's OpenBao credentials.
#![allow(dead_code)]

pub mod agent;
pub mod agent_process;
pub mod eso;
pub mod header_proxy;
pub mod helm;
pub mod istio;
pub mod node;
pub mod pod_istiod;
pub mod trust_sampler;

use std::path::PathBuf;
use std::process::Output;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use meshtrust_testenv::{StoreKind, TestEnv, mesh_file_with};

pub struct Mesh {
    pub env: TestEnv,
    pub file: PathBuf,
}

impl Mesh {
    pub fn start(clusters: usize, extra: &str) -> Mesh {
        Self::from_env(
            TestEnv::builder()
                .clusters(clusters)
                .start()
                .expect("test environment"),
            extra,
        )
    }

    /// From `builder` (an environment with extra parts, e.g. the token controller).
    pub fn start_with(builder: meshtrust_testenv::TestEnvBuilder, extra: &str) -> Mesh {
        Self::from_env(builder.start().expect("test environment"), extra)
    }

    /// On `store` whatever `MESHTRUST_STORE` says: for tests of one server's own behaviour.
    pub fn start_on(store: StoreKind, clusters: usize, extra: &str) -> Mesh {
        Self::from_env(
            TestEnv::builder()
                .clusters(clusters)
                .store(store)
                .start()
                .expect("test environment"),
            extra,
        )
    }

    /// With an OpenBao that keeps its state across `env.bao.stop()` and `env.bao.restart()`.
    pub fn start_persistent(clusters: usize, extra: &str) -> Mesh {
        let env = TestEnv::builder()
            .clusters(clusters)
            .persistent_openbao()
            .start()
            .expect("test environment");
        Self::from_env(env, extra)
    }

    fn from_env(env: TestEnv, extra: &str) -> Mesh {
        let file = env.dir().join("mesh.yaml");
        std::fs::write(&file, mesh_file_with(&env, extra)).expect("write mesh file");
        Mesh { env, file }
    }

    pub fn rewrite(&self, extra: &str) {
        std::fs::write(&self.file, mesh_file_with(&self.env, extra)).expect("write mesh file");
    }

    /// Runs `meshtrust <args> --mesh <file>`.
    pub fn meshtrust(&self, args: &[&str]) -> Output {
        self.meshtrust_from(std::path::Path::new(env!("CARGO_BIN_EXE_meshtrust")), args)
    }

    /// Runs `<binary> <args> --mesh <file>`: another release's meshtrust (upgrade tests).
    pub fn meshtrust_from(&self, binary: &std::path::Path, args: &[&str]) -> Output {
        self.command(binary, args).output().expect("run meshtrust")
    }

    /// `<binary> <args> --mesh <file>` with the store's address and root token: the environment's 3-node
    /// Raft cluster when it has one (every node in BAO_ADDRS), else its dev server.
    fn command(&self, binary: &std::path::Path, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(binary);
        cmd.args(args)
            .arg("--mesh")
            .arg(&self.file)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_ADDRS");
        match &self.env.bao_ha {
            Some(ha) => cmd
                .env("BAO_ADDR", &ha.nodes[0].addr)
                .env("BAO_ADDRS", ha.addrs().join(" "))
                .env("BAO_TOKEN", &ha.root_token),
            None => cmd
                .env("BAO_ADDR", &self.env.bao.addr)
                .env("BAO_TOKEN", &self.env.bao.root_token),
        };
        cmd
    }

    /// Starts `meshtrust <args> --mesh <file>` in the background, its output piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(std::path::Path::new(env!("CARGO_BIN_EXE_meshtrust")), args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn meshtrust")
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.meshtrust(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "meshtrust {args:?} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    pub async fn secret(&self, cluster: usize, namespace: &str, name: &str) -> Option<Secret> {
        let client = self.env.clusters[cluster].client().await.expect("client");
        Api::<Secret>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .expect("get secret")
    }

    pub async fn cacerts(&self, cluster: usize) -> Secret {
        self.secret(cluster, "istio-system", "cacerts")
            .await
            .expect("cacerts exists")
    }

    /// `bao <args>` against the environment's OpenBao, as an independent checker.
    pub fn bao(&self, args: &[&str]) -> String {
        let out = self.env.bao.cli().args(args).output().expect("run bao");
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

pub fn field(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("data");
    String::from_utf8(
        data.get(key)
            .unwrap_or_else(|| panic!("{key} missing"))
            .0
            .clone(),
    )
    .expect("utf8")
}

/// `openssl verify` of the CA cert against root-cert.pem with cert-chain.pem as untrusted intermediates,
/// the same roles Go's x509.Verify gives them in istiod.
pub fn openssl_verify(secret: &Secret) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    for key in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
        std::fs::write(dir.path().join(key), field(secret, key)).expect("write");
    }
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.path().join("root-cert.pem"))
        .arg("-untrusted")
        .arg(dir.path().join("cert-chain.pem"))
        .arg(dir.path().join("ca-cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A self-signed certificate made by `openssl req -x509` in `dir` (`<name>.pem`, its unencrypted key
/// `<name>-key.pem`): `newkey` as openssl takes it (`rsa:4096`, `ec`), `extensions` as `-addext` values. Returns
/// the two paths.
pub fn openssl_self_signed(
    dir: &std::path::Path,
    name: &str,
    subject: &str,
    newkey: &str,
    days: u32,
    extensions: &[&str],
) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["req", "-x509", "-sha256", "-nodes", "-newkey", newkey]);
    if newkey == "ec" {
        cmd.args(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    cmd.args(["-days", &days.to_string(), "-subj", subject]);
    for ext in extensions {
        cmd.args(["-addext", ext]);
    }
    let out = cmd
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Seed 001's bootstrap Job's bundle: a 4096-bit RSA root for 10 years, made outside the store.
pub fn seed_001_root(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    openssl_self_signed(
        dir,
        "seed-root",
        "/O=Istio/CN=Root CA",
        "rsa:4096",
        3650,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
    )
}

/// The public key of a PEM key or certificate, via openssl (independent of meshtrust's own check).
pub fn openssl_pubkey(pem: &str, is_cert: bool) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("in.pem");
    std::fs::write(&path, pem).expect("write");
    let args: Vec<&str> = if is_cert {
        vec!["x509", "-pubkey", "-noout", "-in"]
    } else {
        vec!["pkey", "-pubout", "-in"]
    };
    let out = std::process::Command::new("openssl")
        .args(&args)
        .arg(&path)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A mesh of the environment's first cluster plus `fake` peers that exist only in OpenBao (a published KV entry
/// each), as an in-process admin engine sets it up. Returns the mesh file's path.
pub async fn mesh_with_simulated_peers(mesh: &Mesh, fake: usize) -> PathBuf {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use meshtrust_core::planner::PlanOptions;
    use meshtrust_core::ports::{Cluster, OpenBao};
    use meshtrust_core::secret::SecretBytes;
    use meshtrust_engine::Engine;

    let a = &mesh.env.clusters[0];
    let mut text = format!(
        "apiVersion: meshtrust.dev/v1\nkind: Mesh\nopenbao:\n  address: {}\nclusters:\n  - name: cluster-a\n    kubeconfig: {}\n",
        mesh.env.bao.addr,
        a.kubeconfig.display()
    );
    let peers: Vec<String> = (0..fake).map(|i| format!("peer-{i}")).collect();
    for p in &peers {
        text.push_str(&format!(
            "  - name: {p}\n    apiServer: https://127.0.0.1:1\n"
        ));
    }
    let path = mesh.env.dir().join(format!("mesh-{fake}-peers.yaml"));
    std::fs::write(&path, &text).expect("mesh file");
    let file =
        meshtrust_core::mesh::Mesh::from_yaml(&text, "mesh.yaml", mesh.env.dir().to_path_buf())
            .expect("mesh");
    let bao = root_openbao(mesh);
    for p in &peers {
        let data = BTreeMap::from([
            (p.clone(), SecretBytes::new(format!("kubeconfig of {p}"))),
            (
                "server".to_string(),
                SecretBytes::new("https://127.0.0.1:1"),
            ),
            ("tokenExpires".to_string(), SecretBytes::new("4000000000")),
            ("configHash".to_string(), SecretBytes::new("simulated")),
        ]);
        bao.kv_put("secret", &format!("istio/remote-secrets/{p}"), &data, 0)
            .await
            .expect("put");
    }
    let kube = meshtrust_kube::connect("cluster-a", Some(&a.kubeconfig), None)
        .await
        .expect("connect");
    let clusters: BTreeMap<String, Arc<dyn Cluster>> =
        BTreeMap::from([("cluster-a".to_string(), Arc::new(kube) as Arc<dyn Cluster>)]);
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    Engine::new(file, Arc::new(bao), clusters)
        .converge(&now, PlanOptions::default(), &mut |_, _| {})
        .await
        .expect("settle");
    path
}

/// An OpenBao client with the environment's root token.
pub fn root_openbao(mesh: &Mesh) -> meshtrust_bao::OpenBaoClient {
    meshtrust_bao::OpenBaoClient::new(meshtrust_bao::OpenBaoConfig {
        address: mesh.env.bao.addr.clone(),
        addresses: Vec::new(),
        token: mesh.env.bao.root_token.clone(),
        namespace: None,
        ca_cert_pem: None,
        allow_insecure_http: false,
    })
    .expect("OpenBao client")
}

/// The YAML documents of a multi-document stream, as JSON values (comment-only documents dropped).
pub fn yaml_documents(yaml: &str) -> Vec<serde_json::Value> {
    yaml.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty())
        })
        .map(|d| serde_saphyr::from_str::<serde_json::Value>(d).expect("each document parses"))
        .collect()
}

/// Creates each object as `kubectl create -f` would (`dry_run`: the server checks it and stores nothing).
pub async fn create_objects(client: &kube::Client, objects: &[serde_json::Value], dry_run: bool) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    for object in objects {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let kind = object["kind"].as_str().expect("kind");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .expect("a kind the API server knows");
        let resource: ApiResource = resource;
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        let api: Api<DynamicObject> = match (caps.scope, object["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.create(&params, &dynamic)
            .await
            .unwrap_or_else(|e| panic!("{kind} rejected by the API server: {e}"));
    }
}

/// A minimal CustomResourceDefinition for another controller's kind (its schema left open): enough for the
/// API server to serve and list the objects meshtrust looks for. The controllers themselves are not run here.
pub fn crd(group: &str, version: &str, kind: &str, plural: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// Creates `objects`, retrying while the API server's discovery does not know a just-created kind yet.
pub async fn create_when_served(client: &kube::Client, objects: &[serde_json::Value]) {
    for _ in 0..100 {
        let known = kube::discovery::Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        let all_known = objects.iter().all(|o| {
            let api_version = o["apiVersion"].as_str().unwrap_or_default();
            known.groups().any(|g| {
                g.recommended_resources()
                    .iter()
                    .any(|(r, _)| r.api_version == api_version && o["kind"] == r.kind.as_str())
            })
        });
        if all_known {
            create_objects(client, objects, false).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the API server never served the custom kinds");
}

/// Creates a namespace, as the deploy files' prerequisite (`kubectl create namespace`).
pub async fn create_namespace(client: &kube::Client, name: &str) {
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// `meshtrust render agent --cluster <cluster>` applied to cluster `index`, as an operator deploys the agent
/// (`... | kubectl apply -f -`). The Istio namespace must exist.
pub async fn deploy_agent(mesh: &Mesh, index: usize) {
    let cluster = &mesh.env.clusters[index];
    let out = mesh.ok(&["render", "agent", "--cluster", &cluster.name]);
    let client = cluster.client().await.expect("client");
    create_objects(&client, &yaml_documents(&out), false).await;
}

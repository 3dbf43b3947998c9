//! Moving a running seed mesh onto meshtrust (docs/migrate.md), with a real istiod per cluster the whole time,
//! sampled every 200 ms: each cluster's workload certificate must verify against every other cluster's
//! `istio-ca-root-cert` (0 gaps), and each istiod must keep its peer in `/debug/clusterz`.
//!
//! * Seed 001 on OpenBao (and on Vault: `MESHTRUST_STORE=vault`, not in CI's Vault pass for its cost): a root bundle made by `openssl` kept in KV at `secret/istio/ca`, synced into every
//!   cluster's `cacerts` (the root itself as signing CA) by the real External Secrets Operator; remote
//!   secrets from the real `istioctl create-remote-secret`. The guide's steps: import (`ca.importRoot.kvPath`), hand-over, `apply --adopt`, agents,
//!   rotation to a root generated inside OpenBao, `apply --destroy-imported-key`.
//! * Seed 000: namespace `production`, a root made by hand in the PKI engine (`ca.importRoot.issuer`),
//!   cert-manager's `cacerts` and the Vault Secrets Operator's remote secrets (neither controller builds here:
//!   their objects are recreated from their sources), the real istioctl's kubeconfigs in KV and its long-lived
//!   reader tokens (filled by kube-controller-manager's token controller).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use meshtrust_testenv::{IstioBinaries, Istiod, IstiodOptions, TestCluster, TestEnv};
use serde_json::json;
use support::istio::workload_identity;
use support::trust_sampler::{Sampler, cacerts_label, settled_on};
use support::{Mesh, field};

/// The reader identity Istio's chart makes (`istio-reader-service-account` with read access), which
/// `istioctl create-remote-secret` uses: the seeds keep it, so the mesh files say `readerIdentity: istio`.
/// The Istio namespace exists already.
async fn istio_reader(cluster: &TestCluster) {
    let client = cluster.client().await.expect("client");
    support::create_objects(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "istio-reader-service-account", "namespace": "istio-system",
                    "labels": {"app.kubernetes.io/managed-by": "Helm"}}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "istio-reader-clusterrole-istio-system", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                "rules": [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "istio-reader-clusterrole-istio-system", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "istio-reader-clusterrole-istio-system"},
                "subjects": [{"kind": "ServiceAccount", "name": "istio-reader-service-account", "namespace": "istio-system"}]}),
        ],
        false,
    )
    .await;
}

/// `istioctl --context=<cluster> create-remote-secret --name=<cluster>`, the seeds' own command, run against
/// `cluster` (this istioctl has no `--dry-run` flag: it only ever prints). It takes the reader ServiceAccount,
/// creates the never-expiring token Secret `istio-reader-service-account-istio-remote-secret-token` (filled by
/// the environment's token controller) and prints Secret `istio-remote-secret-<cluster>` holding a kubeconfig
/// with that token, which is returned as printed.
fn istioctl_remote_secret(cluster: &TestCluster) -> serde_json::Value {
    let istioctl = IstioBinaries::istioctl().expect("istioctl");
    let out = std::process::Command::new(istioctl)
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .arg(format!("--context={}", cluster.name))
        .arg("create-remote-secret")
        .arg(format!("--name={}", cluster.name))
        .output()
        .expect("run istioctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "istioctl create-remote-secret: {stderr}"
    );
    // It ends the document with `---`.
    let mut printed = support::yaml_documents(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(printed.len(), 1, "istioctl prints one Secret");
    printed.remove(0)
}

/// The kubeconfig in istioctl's remote secret for `cluster` (what seed 000 puts into KV).
fn istioctl_kubeconfig(printed: &serde_json::Value, cluster: &TestCluster) -> String {
    printed["stringData"][&cluster.name]
        .as_str()
        .expect("istioctl's kubeconfig")
        .to_string()
}

/// istioctl's remote secret as printed, with `extra` metadata a secrets operator adds when it writes the
/// Secret instead.
fn remote_secret(printed: &serde_json::Value, extra: serde_json::Value) -> Secret {
    let mut value = printed.clone();
    merge(&mut value, extra);
    serde_json::from_value(value).expect("remote secret")
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, value) => *slot = value,
    }
}

async fn create_secret(cluster: &TestCluster, secret: &Secret) -> Secret {
    let client = cluster.client().await.expect("client");
    Api::<Secret>::namespaced(client, "istio-system")
        .create(&PostParams::default(), secret)
        .await
        .expect("create secret")
}

async fn get_secret(cluster: &TestCluster, name: &str) -> Option<Secret> {
    let client = cluster.client().await.expect("client");
    Api::<Secret>::namespaced(client, "istio-system")
        .get_opt(name)
        .await
        .expect("get secret")
}

fn api(cluster_client: kube::Client, gvk: (&str, &str, &str), plural: &str) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2), plural);
    Api::namespaced_with(cluster_client, "istio-system", &resource)
}

/// Deletes a controller's object `istio-system/<name>` of kind `gvk` in `cluster`: the hand-over (the guide's
/// `kubectl delete --cascade=orphan`; this API server runs no garbage collector, so a plain delete leaves the
/// Secret it wrote just the same).
async fn delete_object(cluster: &TestCluster, gvk: (&str, &str, &str), plural: &str, name: &str) {
    let client = cluster.client().await.expect("client");
    api(client, gvk, plural)
        .delete(name, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete {} {name}: {e}", gvk.2));
}

/// The peer as `cluster`'s istiod lists it in `/debug/clusterz`: its sync status, or `None` when absent.
async fn peer_status(istiod: &Istiod, peer: &str) -> Option<String> {
    let text = istiod.debug("/debug/clusterz").await.ok()?;
    let clusters: serde_json::Value = serde_json::from_str(&text).ok()?;
    clusters
        .as_array()?
        .iter()
        .find(|c| c["id"] == peer)
        .map(|c| c["syncStatus"].as_str().unwrap_or("?").to_string())
}

/// Samples trust (the shared sampler) and discovery every 200 ms: each istiod must keep its peer listed.
struct Watch<'a> {
    sampler: Sampler,
    clusters: &'a [TestCluster],
    istiods: &'a [Istiod],
    /// Every sample at which an istiod did not list its peer.
    lost_peers: Vec<String>,
    peer_states: BTreeMap<String, String>,
}

impl<'a> Watch<'a> {
    fn new(clusters: &'a [TestCluster], istiods: &'a [Istiod]) -> Self {
        Watch {
            sampler: Sampler::default(),
            clusters,
            istiods,
            lost_peers: vec![],
            peer_states: BTreeMap::new(),
        }
    }

    async fn sample(&mut self) {
        self.sampler.sample(self.clusters, self.istiods).await;
        for (i, istiod) in self.istiods.iter().enumerate() {
            let peer = &self.clusters[1 - i].name;
            let status = peer_status(istiod, peer).await;
            let shown = status.clone().unwrap_or_else(|| "absent".into());
            let key = format!("{} lists {peer}", self.clusters[i].name);
            if self.peer_states.get(&key) != Some(&shown) {
                self.sampler.note(&format!("{key}: {shown}"));
                self.peer_states.insert(key.clone(), shown);
            }
            if status.is_none() {
                self.lost_peers.push(format!(
                    "{:.1}s: {key}: absent",
                    self.sampler.started.elapsed().as_secs_f64()
                ));
            }
        }
    }

    /// Samples for `span`.
    async fn during(&mut self, span: Duration) {
        let start = Instant::now();
        while start.elapsed() < span {
            let tick = Instant::now();
            self.sample().await;
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
        }
    }

    /// Samples until every cluster trusts and signs with `generation` only, or fails after `limit`.
    async fn until_settled_on(&mut self, generation: u32, limit: Duration) {
        let start = Instant::now();
        let done = settled_on(generation);
        loop {
            let tick = Instant::now();
            self.sample().await;
            let mut states = Vec::new();
            let mut served = Vec::new();
            for c in self.clusters {
                states.push(cacerts_label(c).await);
                served.push(support::trust_sampler::generations(
                    &support::trust_sampler::served_roots(c)
                        .await
                        .unwrap_or_default(),
                ));
            }
            if done(&states, &served) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "not settled on {generation} within {limit:?}; timeline: {:#?}",
                self.sampler.timeline
            );
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
        }
    }

    /// Runs `meshtrust <args>` while sampling, notes the command, checks it succeeded and returns its stdout.
    async fn meshtrust_ok(&mut self, mesh: &Mesh, args: &[&str]) -> String {
        let what = args.join(" ");
        let out = self.around(&what, run(mesh, args)).await;
        ok(&out, &what)
    }

    /// Samples while `work` runs on a blocking thread (a `meshtrust` command), then notes `what`.
    async fn around<T: Send + 'static>(
        &mut self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let handle = tokio::task::spawn_blocking(work);
        while !handle.is_finished() {
            let tick = Instant::now();
            self.sample().await;
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
        }
        let out = handle.await.expect("command");
        self.sampler.note(what);
        out
    }

    fn finish(&self, test_start: Instant) {
        self.sampler.report(test_start);
        assert!(
            self.sampler.gaps.is_empty(),
            "trust gaps: {:#?}",
            self.sampler.gaps
        );
        assert!(
            self.lost_peers.is_empty(),
            "an istiod lost its peer: {:#?}",
            self.lost_peers
        );
    }
}

/// Runs `meshtrust <args>` (mesh file and OpenBao credentials of `mesh`) on a blocking thread.
fn run(mesh: &Mesh, args: &[&str]) -> impl FnOnce() -> std::process::Output + Send + 'static {
    let file = mesh.file.clone();
    let (addr, token) = (mesh.env.bao.addr.clone(), mesh.env.bao.root_token.clone());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
            .args(&args)
            .arg("--mesh")
            .arg(&file)
            .env("BAO_ADDR", addr)
            .env("BAO_TOKEN", token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .output()
            .expect("run meshtrust")
    }
}

fn ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts an istiod per cluster (ISTIO_MULTIROOT_MESH=true) once its `cacerts` exists.
async fn start_istiods(mesh: &Mesh) -> Vec<Istiod> {
    let mut istiods = Vec::new();
    for cluster in &mesh.env.clusters {
        workload_identity(cluster).await;
        let started =
            Istiod::start(cluster, mesh.env.dir(), &IstiodOptions { multiroot: true }).await;
        let log = mesh
            .env
            .dir()
            .join(format!("istiod-{}/istiod.log", cluster.name));
        istiods.push(started.unwrap_or_else(|e| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!("istiod {}: {e:?}\n{}", cluster.name, tail.join("\n"))
        }));
    }
    istiods
}

/// Waits until every istiod lists its peer as synced (the seed mesh works before the move starts).
async fn peers_synced(mesh: &Mesh, istiods: &[Istiod]) {
    let start = Instant::now();
    for (i, istiod) in istiods.iter().enumerate() {
        let peer = &mesh.env.clusters[1 - i].name;
        while peer_status(istiod, peer).await.as_deref() != Some("synced") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} never synced {peer}: {}",
                mesh.env.clusters[i].name,
                istiod.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until `istiod` signs workload certificates with `intermediate` (the first certificate of a PEM):
/// istiod took the new `cacerts` live, without a restart.
async fn signs_with(istiod: &Istiod, cluster: &TestCluster, intermediate: &str, roots: &str) {
    let wanted = support::istio::pem_certs(intermediate)[0].clone();
    let start = Instant::now();
    loop {
        let chain = istiod
            .workload_certificate(cluster, support::istio::WORKLOADS, "app", roots)
            .await
            .expect("workload certificate");
        let certs: Vec<String> = chain
            .iter()
            .flat_map(|c| support::istio::pem_certs(c))
            .collect();
        if certs.get(1) == Some(&wanted) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}'s istiod did not take the new intermediate",
            cluster.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seed 001's ESO objects in one cluster: the token Secret and SecretStore for the store (token auth here; the
/// seed logs in with a Kubernetes auth role, which changes nothing of what ESO writes), and the
/// ExternalSecret `istio-system/istio-cacerts` writing `cacerts` with the exact filenames Istio expects.
async fn seed_001_external_secret(mesh: &Mesh, cluster: &TestCluster, crds: &std::path::Path) {
    let client = cluster.client().await.expect("client");
    support::create_namespace(&client, "istio-system").await;
    support::eso::install_crds(&client, crds)
        .await
        .expect("ESO CRDs");
    support::create_objects(
        &client,
        &[json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vault-token", "namespace": "istio-system"},
            "stringData": {"token": mesh.env.bao.root_token}})],
        false,
    )
    .await;
    support::create_when_served(
        &client,
        &[
            json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                "metadata": {"name": "vault", "namespace": "istio-system"},
                "spec": {"provider": {"vault": {"server": mesh.env.bao.addr, "path": "secret", "version": "v2",
                    "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}}}),
            json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": "istio-cacerts", "namespace": "istio-system"},
                "spec": {"refreshInterval": "1h",
                    "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                    "target": {"name": "cacerts", "template": {"data": {
                        "ca-cert.pem": "{{ .root }}", "ca-key.pem": "{{ .key }}",
                        "root-cert.pem": "{{ .root }}", "cert-chain.pem": "{{ .chain }}"}}},
                    "data": [
                        {"secretKey": "root", "remoteRef": {"key": "istio/ca", "property": "root-cert.pem"}},
                        {"secretKey": "chain", "remoteRef": {"key": "istio/ca", "property": "cert-chain.pem"}},
                        {"secretKey": "key", "remoteRef": {"key": "istio/ca", "property": "key.pem"}}]}}),
        ],
    )
    .await;
}

async fn wait_for_secret(cluster: &TestCluster, name: &str) -> Secret {
    let start = Instant::now();
    loop {
        if let Some(s) = get_secret(cluster, name).await {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} never appeared in {}",
            cluster.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pem_pubkey(pem: &str, is_cert: bool) -> String {
    support::openssl_pubkey(pem, is_cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_moves_onto_openbao_keeping_its_root_then_rotates_the_exposed_key_away() {
    let test_start = Instant::now();
    let (eso_bin, eso_crds) = support::eso::locate().expect("External Secrets Operator");
    let mesh = Mesh::start_with(
        TestEnv::builder().clusters(2).token_controller(),
        "ca:\n  importRoot:\n    kvPath: istio/ca\n  rootRotation:\n    phaseDwell: 5s\nremoteSecrets:\n  readerIdentity: istio\n",
    );
    let clusters = &mesh.env.clusters;
    let dir = mesh.env.dir();

    // Seed 001 as its own commands build it: the bundle in KV, ESO syncing it into every cluster's cacerts.
    let (cert, key) = support::seed_001_root(dir);
    let at = |p: &std::path::Path| format!("@{}", p.display());
    mesh.bao(&[
        "kv",
        "put",
        "secret/istio/ca",
        &format!("root-cert.pem={}", at(&cert)),
        &format!("cert-chain.pem={}", at(&cert)),
        &format!("key.pem={}", at(&key)),
    ]);
    let seed_root = std::fs::read_to_string(&cert).expect("root");
    let seed_key_pub = pem_pubkey(&std::fs::read_to_string(&key).expect("key"), false);
    let mut esos = Vec::new();
    for cluster in clusters {
        seed_001_external_secret(&mesh, cluster, &eso_crds).await;
        esos.push(support::eso::start(
            &eso_bin,
            &cluster.kubeconfig,
            &dir.join(format!("eso-{}.log", cluster.name)),
        ));
    }
    let mut synced = Vec::new();
    for cluster in clusters {
        let cacerts = wait_for_secret(cluster, "cacerts").await;
        assert_eq!(
            field(&cacerts, "ca-cert.pem").trim(),
            seed_root.trim(),
            "the root is the CA"
        );
        synced.push(cacerts);
    }
    // istioctl's remote secrets (the seed's discovery), then istiods.
    for (i, cluster) in clusters.iter().enumerate() {
        istio_reader(cluster).await;
        let printed = istioctl_remote_secret(cluster);
        create_secret(&clusters[1 - i], &remote_secret(&printed, json!({}))).await;
        cluster
            .create_login_service_account("istio-system", "meshtrust-agent")
            .await
            .expect("agent identity");
    }
    let istiods = start_istiods(&mesh).await;
    peers_synced(&mesh, &istiods).await;
    let mut watch = Watch::new(clusters, &istiods);
    watch.during(Duration::from_secs(2)).await;
    watch.sampler.gaps.clear();
    watch
        .sampler
        .note("seed 001 running: ESO's cacerts, istioctl's remote secrets");

    // Step 1: OpenBao's side, which imports the root the clusters trust.
    let text = watch
        .meshtrust_ok(&mesh, &["apply", "--openbao-only"])
        .await;
    assert!(text.contains("meshtrust-root-1"), "{text}");
    let issuer = mesh.bao(&["read", "-field=certificate", "pki/issuer/meshtrust-root-1"]);
    assert_eq!(
        pem_pubkey(&issuer, true),
        pem_pubkey(&seed_root, true),
        "the seed's root, imported"
    );
    let status = mesh.ok(&["status"]);
    assert!(status.contains("(key internal: false)"), "{status}");

    // Step 2: ESO still writes cacerts: the plan names its object and nothing is written (nothing flaps).
    let out = watch
        .around("plan --adopt (blocked)", run(&mesh, &["plan", "--adopt"]))
        .await;
    let plan = ok(&out, "plan --adopt");
    assert!(
        plan.contains("is written by External Secrets Operator (ExternalSecret istio-system/istio-cacerts targets it)")
            && plan.contains("has lived outside OpenBao"),
        "{plan}"
    );
    let out = watch
        .around("apply --adopt (refused)", run(&mesh, &["apply", "--adopt"]))
        .await;
    assert!(!out.status.success(), "blocked");
    watch.during(Duration::from_secs(3)).await;
    for (i, cluster) in clusters.iter().enumerate() {
        let now = get_secret(cluster, "cacerts").await.expect("cacerts");
        assert_eq!(
            now.metadata.resource_version, synced[i].metadata.resource_version,
            "nothing flaps"
        );
    }

    // Step 3: hand cacerts over (the guide's orphaning delete; this API server has no garbage collector, so
    // a plain delete leaves the Secret just the same), then take everything over in place.
    for cluster in clusters {
        delete_object(
            cluster,
            ("external-secrets.io", "v1", "ExternalSecret"),
            "externalsecrets",
            "istio-cacerts",
        )
        .await;
    }
    watch.sampler.note("ExternalSecrets istio-cacerts deleted");
    let plan = watch.meshtrust_ok(&mesh, &["plan", "--adopt"]).await;
    assert!(
        plan.contains("its root stays, so istiod takes the new intermediate without a restart")
            && !plan.contains("restart it after apply"),
        "{plan}"
    );
    watch.meshtrust_ok(&mesh, &["apply", "--adopt"]).await;
    for (i, cluster) in clusters.iter().enumerate() {
        let cacerts = get_secret(cluster, "cacerts").await.expect("cacerts");
        assert_eq!(
            cacerts.metadata.uid, synced[i].metadata.uid,
            "taken over in place"
        );
        assert_eq!(
            cacerts_label(cluster).await,
            (vec![1], 1),
            "an intermediate under the seed's root"
        );
        assert_ne!(
            pem_pubkey(&field(&cacerts, "ca-key.pem"), false),
            seed_key_pub,
            "the root key left cacerts"
        );
        let roots = field(&cacerts, "root-cert.pem");
        signs_with(
            &istiods[i],
            cluster,
            &field(&cacerts, "ca-cert.pem"),
            &roots,
        )
        .await;
    }
    watch
        .sampler
        .note("both istiods sign with meshtrust's intermediates (no restart)");
    let out = watch
        .around("apply (legacy reader tokens)", run(&mesh, &["apply"]))
        .await;
    ok(&out, "apply");
    for cluster in clusters {
        assert!(
            get_secret(
                cluster,
                "istio-reader-service-account-istio-remote-secret-token"
            )
            .await
            .is_none(),
            "istioctl's long-lived token is gone from {}",
            cluster.name
        );
    }

    // Step 4: agents; step 5: the rotation to a root generated inside OpenBao, carried by the agents.
    let agents: Vec<_> = (0..2)
        .map(|i| {
            support::agent_process::AgentProcess::start(
                &mesh.env,
                i,
                &mesh.file,
                &mesh.env.bao.addr,
                None,
            )
        })
        .collect();
    watch.during(Duration::from_secs(3)).await;
    watch
        .meshtrust_ok(&mesh, &["ca", "rotate-root", "--start"])
        .await;
    watch.until_settled_on(2, Duration::from_secs(120)).await;
    watch.sampler.note("settled on meshtrust-root-2");

    // Step 6: the KV copy of the exposed key, destroyed only now.
    let plan = watch.meshtrust_ok(&mesh, &["plan"]).await;
    assert!(
        plan.contains("destroy it with `meshtrust apply --destroy-imported-key`"),
        "{plan}"
    );
    let text = watch
        .meshtrust_ok(&mesh, &["apply", "--destroy-imported-key"])
        .await;
    assert!(text.contains("secret/istio/ca"), "{text}");
    let gone = mesh
        .env
        .bao
        .cli()
        .args(["kv", "metadata", "get", "secret/istio/ca"])
        .output()
        .expect("bao");
    assert!(
        !gone.status.success(),
        "every version and the metadata are gone"
    );
    watch.during(Duration::from_secs(2)).await;

    // At the end: no cluster holds or trusts the seed's root or its key; every check passes; nothing to do.
    for cluster in clusters {
        let cacerts = get_secret(cluster, "cacerts").await.expect("cacerts");
        for (name, value) in cacerts.data.clone().unwrap_or_default() {
            let text = String::from_utf8_lossy(&value.0).to_string();
            assert!(
                !text.contains(seed_root.trim()),
                "{}: {name} holds the seed root",
                cluster.name
            );
            if text.contains("PRIVATE KEY") {
                assert_ne!(
                    pem_pubkey(&text, false),
                    seed_key_pub,
                    "{}: {name}",
                    cluster.name
                );
            }
        }
    }
    let verify = mesh.ok(&["verify"]);
    assert!(verify.contains("OK"), "{verify}");
    drop(agents);
    drop(esos);
    watch.finish(test_start);
}

/// `bao <args> -namespace=production`-style commands of seed 000, requiring success.
fn bao_in(mesh: &Mesh, namespace: &str, args: &[&str]) -> String {
    let mut all = vec![args[0]];
    let ns = format!("-namespace={namespace}");
    // `bao secrets enable ...`, `bao kv put ...`: the flag goes after the subcommand's words.
    let words = if matches!(args[0], "secrets" | "kv" | "namespace") {
        2
    } else {
        1
    };
    all.extend(&args[1..words]);
    all.push(&ns);
    all.extend(&args[words..]);
    mesh.bao(&all)
}

/// Seed 000 phase 1 in `production`: PKI and KV mounts, a root made by hand in the engine, and each cluster's
/// intermediate requested the way cert-manager's Vault issuer does (`root/sign-intermediate`), written as
/// cert-manager leaves it (its Secret type, keys, annotations and label) beside its `Certificate`.
async fn seed_000_ca(mesh: &Mesh) {
    mesh.bao(&["namespace", "create", "production"]);
    bao_in(mesh, "production", &["secrets", "enable", "pki"]);
    bao_in(
        mesh,
        "production",
        &["secrets", "tune", "-max-lease-ttl=87600h", "pki"],
    );
    bao_in(
        mesh,
        "production",
        &["secrets", "enable", "-version=2", "-path=kv", "kv"],
    );
    bao_in(
        mesh,
        "production",
        &[
            "write",
            "pki/root/generate/internal",
            "common_name=Production Root CA",
            "issuer_name=root-2025",
            "key_type=rsa",
            "key_bits=4096",
            "ttl=87600h",
        ],
    );
    let dir = mesh.env.dir();
    for cluster in &mesh.env.clusters {
        let (key, csr) = (
            dir.join(format!("{}-int.key", cluster.name)),
            dir.join(format!("{}-int.csr", cluster.name)),
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args([
                "-subj",
                &format!("/O=Istio/CN={} intermediate", cluster.name),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let signed: serde_json::Value = serde_json::from_str(&bao_in(
            mesh,
            "production",
            &[
                "write",
                "-format=json",
                "pki/root/sign-intermediate",
                &format!("csr=@{}", csr.display()),
                &format!("common_name={} intermediate", cluster.name),
                "ttl=8760h",
            ],
        ))
        .expect("signed");
        let client = cluster.client().await.expect("client");
        support::create_namespace(&client, "istio-system").await;
        support::create_objects(
            &client,
            &[
                support::crd("cert-manager.io", "v1", "Certificate", "certificates"),
                support::crd(
                    "secrets.hashicorp.com",
                    "v1beta1",
                    "VaultStaticSecret",
                    "vaultstaticsecrets",
                ),
            ],
            false,
        )
        .await;
        support::create_when_served(
            &client,
            &[json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": "istiod-ca", "namespace": "istio-system"},
                "spec": {"secretName": "cacerts", "isCA": true, "commonName": format!("{} intermediate", cluster.name),
                    "issuerRef": {"name": "openbao", "kind": "ClusterIssuer", "group": "cert-manager.io"}}})],
        )
        .await;
        // cert-manager ends every PEM with a newline (OpenBao's answer does not; istiod concatenates the files).
        let cacerts: Secret = serde_json::from_value(json!({
            "metadata": {"name": "cacerts", "labels": {"controller.cert-manager.io/fao": "true"},
                "annotations": {"cert-manager.io/certificate-name": "istiod-ca", "cert-manager.io/issuer-name": "openbao",
                    "cert-manager.io/issuer-kind": "ClusterIssuer", "cert-manager.io/issuer-group": "cert-manager.io",
                    "cert-manager.io/common-name": format!("{} intermediate", cluster.name), "cert-manager.io/alt-names": "",
                    "cert-manager.io/ip-sans": "", "cert-manager.io/uri-sans": ""}},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": format!("{}\n", signed["data"]["certificate"].as_str().expect("cert")),
                "tls.key": std::fs::read_to_string(&key).expect("key"),
                "ca.crt": format!("{}\n", signed["data"]["issuing_ca"].as_str().expect("root"))}
        }))
        .expect("cacerts");
        create_secret(cluster, &cacerts).await;
    }
}

/// Seed 000 phase 2: istioctl's kubeconfig of each cluster put into `kv/istio/remote-secrets/<cluster>` (the
/// manual step), and the Vault Secrets Operator's copy in each peer, as VSO leaves it (its labels, its
/// `vso-ownerRefUID` annotation and a controller ownerReference to the `VaultStaticSecret`; VSO is not served
/// by the Go module proxy, so these are recreated from its source).
async fn seed_000_remote_secrets(mesh: &Mesh) {
    let clusters = &mesh.env.clusters;
    for (i, cluster) in clusters.iter().enumerate() {
        istio_reader(cluster).await;
        let printed = istioctl_remote_secret(cluster);
        let kubeconfig = istioctl_kubeconfig(&printed, cluster);
        let file = mesh.env.dir().join(format!("{}-remote.yaml", cluster.name));
        std::fs::write(&file, &kubeconfig).expect("kubeconfig");
        bao_in(
            mesh,
            "production",
            &[
                "kv",
                "put",
                &format!("kv/istio/remote-secrets/{}", cluster.name),
                &format!("{}=@{}", cluster.name, file.display()),
            ],
        );
        let peer = &clusters[1 - i];
        let client = peer.client().await.expect("client");
        support::create_when_served(
            &client,
            &[json!({"apiVersion": "secrets.hashicorp.com/v1beta1", "kind": "VaultStaticSecret",
                "metadata": {"name": format!("remote-{}", cluster.name), "namespace": "istio-system"},
                "spec": {"mount": "kv", "type": "kv-v2", "path": format!("istio/remote-secrets/{}", cluster.name),
                    "namespace": "production", "refreshAfter": "60s",
                    "destination": {"name": format!("istio-remote-secret-{}", cluster.name), "create": true,
                        "labels": {"istio/multiCluster": "true"}}}})],
        )
        .await;
        let vss = api(
            client,
            ("secrets.hashicorp.com", "v1beta1", "VaultStaticSecret"),
            "vaultstaticsecrets",
        )
        .get(&format!("remote-{}", cluster.name))
        .await
        .expect("VaultStaticSecret");
        let uid = vss.metadata.uid.expect("uid");
        let vso = json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "hashicorp-vso", "app.kubernetes.io/component": "secret-sync",
                "app.kubernetes.io/name": "vault-secrets-operator"},
            "annotations": {"secrets.hashicorp.com/vso-ownerRefUID": uid},
            "ownerReferences": [{"apiVersion": "secrets.hashicorp.com/v1beta1", "kind": "VaultStaticSecret",
                "name": format!("remote-{}", cluster.name), "uid": uid, "controller": true}]}});
        create_secret(peer, &remote_secret(&printed, vso)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_moves_onto_meshtrust_keeping_its_pki_root_and_its_peers() {
    let test_start = Instant::now();
    let mesh = Mesh::start_with(
        TestEnv::builder().clusters(2).token_controller(),
        "  namespace: production\n  kvMount: kv\n  pkiMount: pki\nca:\n  secretFormat: tls\n  importRoot:\n    issuer: root-2025\n  intermediate:\n    ttl: 1h\n    renewBefore: 3555s\nremoteSecrets:\n  readerIdentity: istio\n",
    );
    let clusters = &mesh.env.clusters;
    seed_000_ca(&mesh).await;
    seed_000_remote_secrets(&mesh).await;
    let istiods = start_istiods(&mesh).await;
    peers_synced(&mesh, &istiods).await;
    let mut watch = Watch::new(clusters, &istiods);
    watch.during(Duration::from_secs(2)).await;
    watch.sampler.gaps.clear();
    watch
        .sampler
        .note("seed 000 running: cert-manager's cacerts, VSO's remote secrets");
    let before: Vec<Secret> = {
        let mut out = Vec::new();
        for c in clusters {
            out.push(get_secret(c, "cacerts").await.expect("cacerts"));
        }
        out
    };

    // Step 1: OpenBao's side. The seed's root is generation 1 as it is: nothing imported, nothing renamed.
    watch
        .meshtrust_ok(&mesh, &["apply", "--openbao-only"])
        .await;
    let out = watch
        .around("plan --adopt (blocked)", run(&mesh, &["plan", "--adopt"]))
        .await;
    let plan = ok(&out, "plan --adopt");
    for expected in [
        "is written by cert-manager (Certificate istio-system/istiod-ca targets it)",
        "is written by Vault Secrets Operator (VaultStaticSecret istio-system/remote-cluster-a",
        "the PKI issuer pki/root-2025",
    ] {
        assert!(plan.contains(expected), "{expected}: {plan}");
    }

    // Step 2: remote secrets first (the CA waits for cert-manager's hand-over): in place, peers kept.
    for (i, cluster) in clusters.iter().enumerate() {
        delete_object(
            cluster,
            ("secrets.hashicorp.com", "v1beta1", "VaultStaticSecret"),
            "vaultstaticsecrets",
            &format!("remote-{}", clusters[1 - i].name),
        )
        .await;
    }
    watch.sampler.note("VaultStaticSecrets deleted");
    watch
        .meshtrust_ok(&mesh, &["apply", "--adopt", "--only", "remote-secrets"])
        .await;
    watch
        .meshtrust_ok(&mesh, &["apply", "--only", "remote-secrets"])
        .await;
    for (i, cluster) in clusters.iter().enumerate() {
        assert!(
            get_secret(
                cluster,
                "istio-reader-service-account-istio-remote-secret-token"
            )
            .await
            .is_none(),
            "istioctl's long-lived token is gone from {}",
            cluster.name
        );
        let cacerts = get_secret(cluster, "cacerts").await.expect("cacerts");
        assert_eq!(
            cacerts.metadata.resource_version, before[i].metadata.resource_version,
            "cert-manager's cacerts untouched"
        );
    }
    watch.during(Duration::from_secs(3)).await;

    // Step 3: the CA: cert-manager's Certificates go, and cacerts is taken over in place under the same root.
    for cluster in clusters {
        delete_object(
            cluster,
            ("cert-manager.io", "v1", "Certificate"),
            "certificates",
            "istiod-ca",
        )
        .await;
    }
    watch.sampler.note("Certificates deleted");
    watch
        .meshtrust_ok(&mesh, &["apply", "--adopt", "--only", "ca"])
        .await;
    for (i, cluster) in clusters.iter().enumerate() {
        let cacerts = get_secret(cluster, "cacerts").await.expect("cacerts");
        assert_eq!(
            cacerts.metadata.uid, before[i].metadata.uid,
            "taken over in place"
        );
        assert_eq!(
            field(&cacerts, "ca.crt"),
            field(&before[i], "ca.crt"),
            "the same root"
        );
        assert_ne!(
            field(&cacerts, "tls.crt"),
            field(&before[i], "tls.crt"),
            "meshtrust's intermediate"
        );
        assert_eq!(cacerts.type_.as_deref(), Some("kubernetes.io/tls"));
        signs_with(
            &istiods[i],
            cluster,
            &field(&cacerts, "tls.crt"),
            &field(&cacerts, "ca.crt"),
        )
        .await;
    }
    watch
        .sampler
        .note("both istiods sign with meshtrust's intermediates (no restart)");
    watch.during(Duration::from_secs(3)).await;
    let issuer = bao_in(
        &mesh,
        "production",
        &["read", "-field=issuer_name", "pki/issuer/root-2025"],
    );
    assert_eq!(issuer.trim(), "root-2025", "the seed's issuer is as it was");
    let verify = mesh.ok(&["verify"]);
    assert!(verify.contains("OK"), "{verify}");
    let plan = mesh.ok(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");

    // Step 7: the agents take over. The mesh file makes intermediates fall due 45 s after issue, so each agent
    // renews its cluster's under the seed's issuer, through its own policy (`pki/issuer/root-2025/...`).
    let mut agents = Vec::new();
    for (i, cluster) in clusters.iter().enumerate() {
        cluster
            .create_login_service_account("istio-system", "meshtrust-agent")
            .await
            .expect("agent identity");
        // A resync every 5 s: renewals are found at the periodic resync (default 5 min).
        agents.push(support::agent_process::AgentProcess::start_with(
            &mesh.env,
            i,
            &mesh.file,
            &mesh.env.bao.addr,
            None,
            &["--resync-interval", "5s"],
        ));
    }
    watch.sampler.note("agents started");
    let adopted: Vec<String> = {
        let mut out = Vec::new();
        for c in clusters {
            out.push(field(
                &get_secret(c, "cacerts").await.expect("cacerts"),
                "tls.crt",
            ));
        }
        out
    };
    let start = Instant::now();
    for (i, cluster) in clusters.iter().enumerate() {
        loop {
            watch.sample().await;
            let now = get_secret(cluster, "cacerts").await.expect("cacerts");
            if field(&now, "tls.crt") != adopted[i] {
                assert_eq!(
                    field(&now, "ca.crt"),
                    field(&before[i], "ca.crt"),
                    "the same root"
                );
                signs_with(
                    &istiods[i],
                    cluster,
                    &field(&now, "tls.crt"),
                    &field(&now, "ca.crt"),
                )
                .await;
                watch.sampler.note(&format!(
                    "{}'s agent renewed its intermediate under root-2025",
                    cluster.name
                ));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no renewal by the agent: {}",
                agents[i].log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(agents);
    watch.finish(test_start);
}

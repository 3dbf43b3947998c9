//! Cross-cluster discovery against the real OpenBao and three real API servers: istioctl-compatible remote
//! secrets published through OpenBao and synced to every peer, token refresh, peer removal, ownership, and the
//! cost of an idle poll.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use meshtrust_core::mesh::Mesh as MeshFile;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::Cluster;
use meshtrust_engine::Engine;
use serde_json::json;
use support::{Mesh, field};

async fn remote_secrets(mesh: &Mesh, cluster: usize) -> BTreeMap<String, Secret> {
    let client = mesh.env.clusters[cluster].client().await.expect("client");
    let list = Api::<Secret>::namespaced(client, "istio-system")
        .list(&ListParams::default().labels("istio/multiCluster=true"))
        .await
        .expect("list");
    list.items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
        .collect()
}

async fn client_from(kubeconfig: &str) -> Client {
    let kc = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_gets_working_istioctl_compatible_secrets_for_its_peers() {
    let mesh = Mesh::start(3, "");
    mesh.ok(&["apply"]);
    for (i, me) in ["cluster-a", "cluster-b", "cluster-c"].iter().enumerate() {
        let secrets = remote_secrets(&mesh, i).await;
        let mut names: Vec<&String> = secrets.keys().collect();
        names.sort();
        let expected: Vec<String> = ["cluster-a", "cluster-b", "cluster-c"]
            .iter()
            .filter(|c| *c != me)
            .map(|c| format!("istio-remote-secret-{c}"))
            .collect();
        assert_eq!(names, expected.iter().collect::<Vec<_>>(), "in {me}");
    }

    let in_a = remote_secrets(&mesh, 0).await;
    let secret = &in_a["istio-remote-secret-cluster-b"];
    let labels = secret.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["istio/multiCluster"], "true");
    assert_eq!(
        secret.metadata.annotations.as_ref().expect("annotations")["networking.istio.io/cluster"],
        "cluster-b"
    );
    assert!(secret.type_.is_none() || secret.type_.as_deref() == Some("Opaque"));
    let data = secret.data.as_ref().expect("data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec!["cluster-b"],
        "one data key, the cluster ID"
    );
    let kubeconfig = field(secret, "cluster-b");
    assert!(
        kubeconfig
            .starts_with("apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: "),
        "{kubeconfig}"
    );
    assert!(kubeconfig.contains(&format!(
        "    server: {}\n  name: cluster-b\n",
        mesh.env.clusters[1].server
    )));
    assert!(kubeconfig.contains(
        "current-context: cluster-b\nkind: Config\nusers:\n- name: cluster-b\n  user:\n    token: "
    ));

    // The same kubeconfig is what OpenBao holds, at seed 000's path.
    let kv: serde_json::Value = serde_json::from_str(&mesh.bao(&[
        "kv",
        "get",
        "-format=json",
        "secret/istio/remote-secrets/cluster-b",
    ]))
    .expect("kv");
    assert_eq!(
        kv["data"]["data"]["cluster-b"].as_str(),
        Some(kubeconfig.as_str())
    );

    // The kubeconfig works against cluster-b, for exactly what the reader role allows.
    let reader = client_from(&kubeconfig).await;
    Api::<Service>::all(reader.clone())
        .list(&ListParams::default())
        .await
        .expect("list services in cluster-b");
    Api::<EndpointSlice>::all(reader.clone())
        .list(&ListParams::default())
        .await
        .expect("list endpointslices");
    Api::<Pod>::all(reader.clone())
        .list(&ListParams::default())
        .await
        .expect("list pods");
    let attempt: Secret =
        serde_json::from_value(json!({"metadata": {"name": "evil"}, "stringData": {"a": "b"}}))
            .expect("secret");
    let denied = Api::<Secret>::namespaced(reader, "default")
        .create(&PostParams::default(), &attempt)
        .await;
    match denied {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("creating a Secret must be forbidden, got {other:?}"),
    }

    // An idle re-apply writes nothing.
    let before: Vec<_> = remote_secrets(&mesh, 0)
        .await
        .values()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    assert_eq!(mesh.json(&["apply"])["applied"], json!([]));
    let after: Vec<_> = remote_secrets(&mesh, 0)
        .await
        .values()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_falling_due_is_republished_and_peers_follow() {
    // Kubernetes' shortest token is 10 minutes; refreshing 599 s ahead makes it due after a second.
    let mesh = Mesh::start(
        2,
        "remoteSecrets:\n  tokenTtl: 10m\n  refreshBefore: 599s\n",
    );
    mesh.ok(&["apply"]);
    let first = field(
        &remote_secrets(&mesh, 1).await["istio-remote-secret-cluster-a"],
        "cluster-a",
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let plan = mesh.json(&["plan"]);
    let reasons: Vec<&str> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("reader token expires in")),
        "{reasons:?}"
    );
    mesh.ok(&["apply"]);
    let secret = remote_secrets(&mesh, 1)
        .await
        .remove("istio-remote-secret-cluster-a")
        .expect("secret");
    assert_ne!(
        field(&secret, "cluster-a"),
        first,
        "a new token reached the peer"
    );
    assert_eq!(
        secret.metadata.annotations.as_ref().expect("ann")["meshtrust.dev/kv-version"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_cluster_removes_its_remote_secrets_and_nothing_else() {
    let mesh = Mesh::start(3, "");
    mesh.ok(&["apply"]);
    let snapshot = |secrets: BTreeMap<String, Secret>| -> BTreeMap<String, Option<String>> {
        secrets
            .into_iter()
            .map(|(k, s)| (k, s.metadata.resource_version))
            .collect()
    };
    let a_before = snapshot(remote_secrets(&mesh, 0).await);
    let cacerts_before = mesh.cacerts(0).await.metadata.resource_version;
    let c_before = snapshot(remote_secrets(&mesh, 2).await);

    let text = std::fs::read_to_string(&mesh.file).expect("mesh");
    let start = text.find("  - name: cluster-c").expect("cluster-c block");
    std::fs::write(&mesh.file, &text[..start]).expect("mesh without cluster-c");
    let out = mesh.json(&["apply"]);
    let applied: Vec<String> = out["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|c| format!("{} {}", c["target"], c["resource"]))
        .collect();
    // Two deletes, one unpublish, cluster-c's auth mount and agent policy go, and the admin policy loses
    // cluster-c's auth mount rules.
    assert_eq!(applied.len(), 6, "{applied:?}");
    assert!(
        applied
            .iter()
            .any(|a| a.contains("policy meshtrust-agent-cluster-c")),
        "{applied:?}"
    );
    assert!(
        applied.iter().any(|a| a.contains("policy meshtrust-admin")),
        "{applied:?}"
    );

    let mut a_after = snapshot(remote_secrets(&mesh, 0).await);
    assert!(!a_after.contains_key("istio-remote-secret-cluster-c"));
    let mut expected = a_before.clone();
    expected.remove("istio-remote-secret-cluster-c");
    assert_eq!(
        a_after, expected,
        "cluster-a's other remote secrets untouched"
    );
    a_after.clear();
    assert!(
        !remote_secrets(&mesh, 1)
            .await
            .contains_key("istio-remote-secret-cluster-c")
    );
    assert_eq!(
        mesh.cacerts(0).await.metadata.resource_version,
        cacerts_before
    );
    assert_eq!(
        snapshot(remote_secrets(&mesh, 2).await),
        c_before,
        "the departed cluster itself is not touched"
    );
    let gone = mesh
        .env
        .bao
        .cli()
        .args(["kv", "get", "secret/istio/remote-secrets/cluster-c"])
        .output()
        .expect("bao");
    assert!(!gone.status.success(), "its KV entry is gone");
    // Its agent can no longer log in: no auth mount, no role, no policy.
    let auth = mesh.bao(&["auth", "list", "-format=json"]);
    assert!(!auth.contains("cluster-c"), "{auth}");
    let policy = mesh
        .env
        .bao
        .cli()
        .args(["policy", "read", "meshtrust-agent-cluster-c"])
        .output()
        .expect("bao");
    assert!(!policy.status.success(), "its policy is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_secret_meshtrust_does_not_own_is_never_touched_and_adopt_takes_it_over_in_place()
{
    let mesh = Mesh::start(2, "");
    let client = mesh.env.clusters[0].client().await.expect("client");
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "istio-system"}})).expect("ns");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("ns");
    let handmade: Secret = serde_json::from_value(json!({
        "metadata": {"name": "istio-remote-secret-cluster-b", "labels": {"istio/multiCluster": "true"}},
        "stringData": {"cluster-b": "made by istioctl"}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client, "istio-system")
        .create(&PostParams::default(), &handmade)
        .await
        .expect("create");
    let out = mesh.meshtrust(&["apply"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("istio-remote-secret-cluster-b")
            && stderr.contains("not managed by meshtrust"),
        "{stderr}"
    );
    let still = &remote_secrets(&mesh, 0).await["istio-remote-secret-cluster-b"];
    assert_eq!(field(still, "cluster-b"), "made by istioctl");

    // --adopt rewrites it in place (same object, never absent, so istiod never drops the peer).
    let plan = mesh.ok(&["plan", "--adopt"]);
    assert!(
        plan.contains("--adopt: taking over cluster-b's remote secret in place"),
        "{plan}"
    );
    mesh.ok(&["apply", "--adopt"]);
    let adopted = &remote_secrets(&mesh, 0).await["istio-remote-secret-cluster-b"];
    assert_eq!(
        adopted.metadata.uid, still.metadata.uid,
        "the same Secret, updated in place"
    );
    assert!(
        field(adopted, "cluster-b").contains("kind: Config"),
        "meshtrust's kubeconfig"
    );
    assert_eq!(
        adopted.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/managed-by"],
        "meshtrust"
    );
}

/// An agent-scoped engine (only cluster-a connected, OpenBao configuration left alone, peers remembered across
/// rounds) for a mesh of cluster-a plus `fake` simulated peers: the OpenBao requests and answer bytes of an idle
/// poll (the change marker), and the requests of an idle round once the peers have been read.
async fn idle_poll_requests(mesh: &Mesh, fake: usize) -> (u64, u64, u64) {
    let path = support::mesh_with_simulated_peers(mesh, fake).await;
    let text = std::fs::read_to_string(&path).expect("mesh");
    let file = MeshFile::from_yaml(&text, "mesh.yaml", mesh.env.dir().to_path_buf()).expect("mesh");
    let bao = support::root_openbao(mesh);
    let a = &mesh.env.clusters[0];
    let kube = meshtrust_kube::connect("cluster-a", Some(&a.kubeconfig), None)
        .await
        .expect("connect");
    let kube: Arc<dyn Cluster> = Arc::new(kube);
    let clusters: BTreeMap<String, Arc<dyn Cluster>> =
        BTreeMap::from([("cluster-a".to_string(), kube.clone())]);
    let agent = Engine::new(file, Arc::new(bao.clone()), clusters)
        .with_scope(meshtrust_engine::Scope::Agent)
        .with_published_cache(Default::default());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    agent
        .plan(now, PlanOptions::default())
        .await
        .expect("first round reads every peer");
    let (requests, bytes) = (bao.request_count(), bao.response_bytes());
    agent.index_version().await.expect("poll");
    let poll = (bao.request_count() - requests, bao.response_bytes() - bytes);
    let before = bao.request_count();
    let (plan, _) = agent.plan(now, PlanOptions::default()).await.expect("plan");
    let cost = bao.request_count() - before;
    assert!(plan.is_empty(), "idle: {plan}");
    assert_eq!(
        remote_secrets(mesh, 0).await.len(),
        fake,
        "every simulated peer is synced"
    );
    metadata_list_matches_the_full_list(kube.as_ref()).await;
    (poll.0, poll.1, cost)
}

/// The agent lists its remote secrets without their data: the same objects, labels, annotations and
/// resourceVersions as the full list, and no kubeconfig.
async fn metadata_list_matches_the_full_list(kube: &dyn Cluster) {
    let selector = "istio/multiCluster=true";
    let full = kube
        .list_secrets("istio-system", selector)
        .await
        .expect("list");
    let meta = kube
        .list_secret_metadata("istio-system", selector)
        .await
        .expect("list metadata");
    assert!(!full.is_empty());
    assert_eq!(full.len(), meta.len());
    for (f, m) in full.iter().zip(&meta) {
        assert_eq!(
            (&f.name, &f.labels, &f.annotations, &f.resource_version),
            (&m.name, &m.labels, &m.annotations, &m.resource_version)
        );
        assert!(!f.data.is_empty() && m.data.is_empty(), "{}", m.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_poll_costs_the_same_few_requests_at_3_and_30_peers() {
    let small = Mesh::start(1, "");
    let (poll_3, bytes_3, at_3) = idle_poll_requests(&small, 2).await;
    let large = Mesh::start(1, "");
    let (poll_30, bytes_30, at_30) = idle_poll_requests(&large, 29).await;
    eprintln!(
        "an idle poll: {poll_3} request ({bytes_3} bytes) with 3 clusters, {poll_30} ({bytes_30} bytes) with 30; an idle round: {at_3} and {at_30} requests"
    );
    assert_eq!((poll_3, poll_30), (1, 1), "one request per poll");
    assert!(
        bytes_30 <= 2048 && bytes_3 <= 2048,
        "small: {bytes_3}, {bytes_30}"
    );
    assert_eq!(at_3, at_30, "constant in the number of peers");
    assert!(at_30 <= 6, "a handful of requests: {at_30}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_other_controllers_still_write_block_the_plan_by_name_and_one_domain_moves_at_a_time()
 {
    let mesh = Mesh::start(2, "");
    let client = mesh.env.clusters[0].client().await.expect("client");
    support::create_namespace(&client, "istio-system").await;
    support::create_objects(
        &client,
        &[
            support::crd("cert-manager.io", "v1", "Certificate", "certificates"),
            support::crd(
                "external-secrets.io",
                "v1",
                "ExternalSecret",
                "externalsecrets",
            ),
        ],
        false,
    )
    .await;
    // Seed 000's cacerts as cert-manager leaves it (its Secret type, keys and annotations; no ownerReference by
    // default), and a remote secret ESO syncs (its labels, annotation and controller ownerReference).
    support::create_when_served(
        &client,
        &[
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": "istiod-ca", "namespace": "istio-system"},
                "spec": {"secretName": "cacerts", "isCA": true, "commonName": "cluster-a intermediate"}}),
            json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": "peer-cluster-b", "namespace": "istio-system"},
                "spec": {"target": {"name": "istio-remote-secret-cluster-b"}}}),
        ],
    )
    .await;
    let es_uid = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "istio-system",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
            "externalsecrets",
        ),
    )
    .get("peer-cluster-b")
    .await
    .expect("ExternalSecret")
    .metadata
    .uid
    .expect("uid");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let cert_manager: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cacerts", "labels": {"controller.cert-manager.io/fao": "true"},
            "annotations": {"cert-manager.io/certificate-name": "istiod-ca", "cert-manager.io/issuer-name": "openbao",
                "cert-manager.io/issuer-kind": "ClusterIssuer", "cert-manager.io/issuer-group": "cert-manager.io"}},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "cert", "tls.key": "key", "ca.crt": "ca"}
    }))
    .expect("cacerts");
    let eso: Secret = serde_json::from_value(json!({
        "metadata": {"name": "istio-remote-secret-cluster-b",
            "labels": {"istio/multiCluster": "true", "reconcile.external-secrets.io/managed": "true",
                "reconcile.external-secrets.io/created-by": "0f3c"},
            "annotations": {"reconcile.external-secrets.io/data-hash": "9a1b"},
            "ownerReferences": [{"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "name": "peer-cluster-b", "uid": es_uid, "controller": true, "blockOwnerDeletion": true}]},
        "stringData": {"cluster-b": "synced by ESO"}
    }))
    .expect("remote secret");
    let pp = PostParams::default();
    let cacerts = secrets.create(&pp, &cert_manager).await.expect("cacerts");
    let synced = secrets.create(&pp, &eso).await.expect("remote secret");

    let plan = mesh.ok(&["plan", "--adopt"]);
    assert!(
        plan.contains("BLOCKED cluster cluster-a Secret istio-system/cacerts: is written by cert-manager (Certificate istio-system/istiod-ca targets it)"),
        "{plan}"
    );
    assert!(
        plan.contains("BLOCKED cluster cluster-a Secret istio-system/istio-remote-secret-cluster-b: is written by External Secrets Operator (ExternalSecret istio-system/peer-cluster-b targets it)")
            && plan.contains("kubectl -n istio-system delete externalsecret peer-cluster-b --cascade=orphan"),
        "{plan}"
    );
    assert!(!mesh.meshtrust(&["apply", "--adopt"]).status.success());
    let rv = |s: &Secret| s.metadata.resource_version.clone();
    let now = |name: &'static str| {
        let secrets = secrets.clone();
        async move { secrets.get(name).await.expect("secret") }
    };
    assert_eq!(
        rv(&now("cacerts").await),
        rv(&cacerts),
        "nothing written while blocked"
    );
    assert_eq!(rv(&now("istio-remote-secret-cluster-b").await), rv(&synced));

    // Remote secrets first: ESO's object goes (this API server has no garbage collector, so the Secret keeps
    // its then dangling ownerReference, which an orphaning delete would have removed), cert-manager's stays.
    kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "istio-system",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
            "externalsecrets",
        ),
    )
    .delete("peer-cluster-b", &Default::default())
    .await
    .expect("delete ExternalSecret");
    mesh.ok(&["apply", "--adopt", "--only", "remote-secrets"]);
    let adopted = now("istio-remote-secret-cluster-b").await;
    assert_eq!(
        adopted.metadata.uid, synced.metadata.uid,
        "taken over in place"
    );
    assert!(field(&adopted, "cluster-b").contains("kind: Config"));
    let labels = adopted.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels
            .keys()
            .any(|k| k.starts_with("reconcile.external-secrets.io")),
        "{labels:?}"
    );
    assert!(
        adopted
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        rv(&now("cacerts").await),
        rv(&cacerts),
        "cert-manager's cacerts untouched"
    );
    let plan = mesh.ok(&["plan", "--adopt", "--only", "ca"]);
    assert!(
        plan.contains("Certificate istio-system/istiod-ca"),
        "{plan}"
    );
}

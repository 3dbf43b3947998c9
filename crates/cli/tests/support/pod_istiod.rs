//! istiod as a pod on the test nodes: Istio's own charts installed by `scripts/dev-env istio` (the pilot image
//! from `scripts/build-image pilot`), its CA reached at the pod's address (the host routes every node's pod
//! range), its debug endpoints through `kubectl port-forward`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::Api;
use kube::api::ListParams;
use meshtrust_testenv::{TestCluster, TestEnvError, istio_ca};
use serde_json::{Value, json};

use super::Mesh;
use super::istio::create;
use super::node::{kubectl, port_forward_get, repo, run, script};
use super::trust_sampler::WorkloadCa;

const NS: &str = "istio-system";

/// istiod's image around the `pilot-discovery` of `scripts/build-istio` (built once, then cached).
pub fn pilot_image() -> PathBuf {
    PathBuf::from(script(&["build-image", "pilot"]))
}

/// `scripts/dev-env istio --dir <the environment's directory>`: Istio's base and istiod charts in every
/// cluster with the values `render gitops` writes. Returns how long it took (helm `--wait`: istiod Ready).
pub fn install(mesh: &Mesh) -> Duration {
    let start = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/dev-env"))
        .args(["istio", "--dir"])
        .arg(mesh.env.dir());
    run(cmd);
    start.elapsed()
}

/// The istiod pod of a cluster: its CA at `<pod IP>:15012`, found anew on every call (as a sidecar finds
/// istiod through its Service).
pub struct PodIstiod;

impl WorkloadCa for PodIstiod {
    async fn workload_certificate(
        &self,
        cluster: &TestCluster,
        namespace: &str,
        service_account: &str,
        roots_pem: &str,
    ) -> Result<Vec<String>, TestEnvError> {
        let ip = ready_pod_ip(cluster).await?;
        let token = cluster
            .request_token_for(namespace, service_account, &["istio-ca"])
            .await?;
        istio_ca::create_certificate(&format!("{ip}:15012"), roots_pem, &token, 3600).await
    }
}

async fn ready_pod_ip(cluster: &TestCluster) -> Result<String, TestEnvError> {
    let pods = Api::<Pod>::namespaced(cluster.client().await?, NS)
        .list(&ListParams::default().labels("app=istiod"))
        .await
        .map_err(|e| TestEnvError::Kube(format!("list istiod pods: {e}")))?;
    pods.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref())
        .filter(|s| {
            s.conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .find_map(|s| s.pod_ip.clone())
        .ok_or_else(|| TestEnvError::Kube(format!("no Ready istiod pod in {}", cluster.name)))
}

/// Namespaces istiod writes no `istio-ca-root-cert` into (Istio's namespace controller: `inject.IgnoredNamespaces`
/// less kube-system).
const SKIPPED_BY_ISTIOD: [&str; 3] = ["kube-public", "kube-node-lease", "local-path-storage"];

/// istiod took the plugged-in CA the kubelet mounted from `cacerts` (its log says so), and every namespace's
/// `istio-ca-root-cert` holds the mesh root of that `cacerts`.
pub async fn uses_the_mesh_root(mesh: &Mesh, cluster: usize) {
    let root = super::field(&mesh.cacerts(cluster).await, "root-cert.pem");
    let client = mesh.env.clusters[cluster].client().await.expect("client");
    let namespaces: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| !SKIPPED_BY_ISTIOD.contains(&n.as_str()))
        .collect();
    let start = Instant::now();
    for ns in &namespaces {
        loop {
            let published = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt("istio-ca-root-cert")
                .await
                .expect("get istio-ca-root-cert")
                .and_then(|c| c.data)
                .and_then(|d| d.get("root-cert.pem").cloned());
            if published.as_deref().map(str::trim) == Some(root.trim()) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "istio-ca-root-cert in {ns} of cluster {cluster} is the mesh root: {published:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let logs = run({
        let mut c = kubectl(mesh, cluster);
        c.args(["-n", NS, "logs", "deploy/istiod"]);
        c
    });
    for line in ["Use local CA certificate", "Added cacerts files watcher"] {
        assert!(
            logs.contains(line),
            "istiod's log says {line:?} (the plugged-in CA):\n{logs}"
        );
    }
}

/// `GET <path>` on istiod's monitoring port (15014, where the chart's istiod serves `/debug/*`) of `cluster`,
/// through `kubectl port-forward`, as JSON.
fn debug(mesh: &Mesh, cluster: usize, path: &str) -> Value {
    let text = port_forward_get(mesh, cluster, NS, "deploy/istiod", 15014, path);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// cluster-a's istiod reports `peer` synced (`/debug/clusterz`) and lists a Service created in `peer` now
/// (`/debug/registryz`): it reads the peer's API server through the remote secret meshtrust wrote.
pub async fn reads_its_peer(mesh: &Mesh, peer: usize) {
    let name = mesh.env.clusters[peer].name.clone();
    let client = mesh.env.clusters[peer].client().await.expect("client");
    create(
        &Api::<Service>::namespaced(client, "default"),
        json!({
            "metadata": {"name": "from-the-peer"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
        }),
    )
    .await;
    let host = "from-the-peer.default.svc.cluster.local";
    let start = Instant::now();
    loop {
        let (clusterz, registryz) = tokio::task::block_in_place(|| {
            (
                debug(mesh, 0, "/debug/clusterz"),
                debug(mesh, 0, "/debug/registryz"),
            )
        });
        let synced = clusterz.as_array().is_some_and(|all| {
            all.iter()
                .any(|c| c["id"] == name.as_str() && c["syncStatus"] == "synced")
        });
        let listed = registryz.as_array().is_some_and(|all| {
            all.iter()
                .any(|s| s["hostname"] == host && !s["clusterVIPs"]["Addresses"][&name].is_null())
        });
        if synced && listed {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cluster-a's istiod reports {name} synced ({clusterz}) and lists {host} from it"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

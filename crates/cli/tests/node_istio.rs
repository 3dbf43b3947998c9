//! istiod as a pod on a real node per cluster: Istio's own charts (`base`, `istio-control/istio-discovery` from
//! the istio module) installed with `helm install` and the values `meshtrust render gitops` writes, a pilot image
//! built here around the same `pilot-discovery` (`scripts/build-image pilot`). The kubelet mounts `cacerts`
//! into istiod for real. Needs root and the node pieces, like node_agent.rs.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use meshtrust_testenv::{ISTIO_VERSION, install_istio_crds};
use serde_json::Value;
use support::Mesh;
use support::node::{helm, kubectl, mesh_with_nodes, port_forward_get, run, script};

const NS: &str = "istio-system";

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|d| serde_saphyr::from_str::<Value>(d.trim_start_matches("---")).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart values `render gitops --flavor flux` gives HelmRelease `<release>-<cluster>`, written to a file.
fn values_file(mesh: &Mesh, rendered: &[Value], release: &str, cluster: &str) -> PathBuf {
    let name = format!("{release}-{cluster}");
    let values = rendered
        .iter()
        .find(|d| d["kind"] == "HelmRelease" && d["metadata"]["name"] == name.as_str())
        .map(|d| d["spec"]["values"].clone())
        .unwrap_or_else(|| panic!("a HelmRelease {name}"));
    let file = mesh.env.dir().join(format!("{name}.values.json"));
    std::fs::write(&file, values.to_string()).expect("values");
    file
}

/// Istio's base and istiod charts in every cluster, as `scripts/dev-env istio` installs them.
fn install_istio(mesh: &Mesh, charts: &Path) {
    let rendered = documents(&mesh.ok(&["render", "gitops", "--flavor", "flux"]));
    for (i, cluster) in mesh.env.clusters.iter().enumerate() {
        let base = values_file(mesh, &rendered, "istio-base", &cluster.name);
        let istiod = values_file(mesh, &rendered, "istiod", &cluster.name);
        run({
            let mut c = helm(mesh, i);
            c.args(["upgrade", "--install", "istio-base"])
                .arg(charts.join("base"))
                .args(["-n", NS, "--create-namespace", "--wait", "-f"])
                .arg(&base);
            c
        });
        run({
            let mut c = helm(mesh, i);
            c.args(["upgrade", "--install", "istiod"])
                .arg(charts.join("istio-control/istio-discovery"))
                .args(["-n", NS, "--wait", "--timeout", "5m", "-f"])
                .arg(&istiod)
                .args(["--set", "global.hub=localhost/meshtrust"])
                .args(["--set", "global.tag=meshtrust-dev"])
                .args(["--set", "global.imagePullPolicy=IfNotPresent"]);
            c
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn istiod_runs_as_a_pod_with_the_plugged_in_ca_and_reads_its_peers() {
    let pilot = PathBuf::from(script(&["build-image", "pilot"]));
    let mesh = mesh_with_nodes(2, &[&pilot]);
    // The CLI writes cacerts and the remote secrets; Istio's CRDs come with the base chart.
    mesh.ok(&["apply"]);
    let charts = PathBuf::from(script(&["build-istio", "print-charts"]));
    assert!(charts.is_dir(), "Istio's charts for {ISTIO_VERSION}");
    for cluster in &mesh.env.clusters {
        install_istio_crds(cluster).await.expect("CRDs");
    }
    tokio::task::block_in_place(|| install_istio(&mesh, &charts));

    for i in 0..2 {
        let root = support::field(&mesh.cacerts(i).await, "root-cert.pem");
        let client = mesh.env.clusters[i].client().await.expect("client");
        let start = Instant::now();
        // istiod publishes its root to every namespace: the mesh's root from the mounted cacerts.
        loop {
            let published = Api::<ConfigMap>::namespaced(client.clone(), "default")
                .get_opt("istio-ca-root-cert")
                .await
                .expect("get")
                .and_then(|c| c.data)
                .and_then(|d| d.get("root-cert.pem").cloned());
            if published.as_deref().map(str::trim) == Some(root.trim()) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "istio-ca-root-cert in cluster {i} is the mesh root: {published:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let logs = run({
            let mut c = kubectl(&mesh, i);
            c.args(["-n", NS, "logs", "deploy/istiod"]);
            c
        });
        assert!(
            logs.contains("Use local CA certificate"),
            "istiod took the plugged-in CA the kubelet mounted:\n{logs}"
        );
    }
    let peer = mesh.env.clusters[1].name.clone();
    let start = Instant::now();
    loop {
        let clusterz = tokio::task::block_in_place(|| {
            port_forward_get(&mesh, 0, NS, "deploy/istiod", 15014, "/debug/clusterz")
        });
        let synced = serde_json::from_str::<Value>(&clusterz).is_ok_and(|all| {
            all.as_array().is_some_and(|all| {
                all.iter()
                    .any(|c| c["id"] == peer.as_str() && c["syncStatus"] == "synced")
            })
        });
        if synced {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cluster-a's istiod reports {peer} synced: {clusterz}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

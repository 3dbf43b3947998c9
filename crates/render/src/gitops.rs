//! GitOps manifests for the mesh, in dependency order per cluster: OpenBao setup → meshtrust agent →
//! istio-base → istiod → east-west gateway. ArgoCD Applications ordered by sync waves (seed 000), or Flux
//! Kustomizations and HelmReleases chained with `dependsOn` (seed 001). Pure data.

use meshtrust_core::mesh::{ClusterSettings, Mesh, ReaderIdentity};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    ArgoCd,
    Flux,
}

#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The Git repository holding the per-cluster paths (OpenBao setup Job, agent manifests).
    pub repo_url: String,
    /// Base path in it; each cluster uses `<path>/<cluster>/...`.
    pub path: String,
    pub istio_version: String,
    pub istio_chart_repo: String,
    /// Deploy the agent from the Helm chart (charts/meshtrust-agent) instead of the Git path of `render agent`.
    pub agent_chart: Option<AgentChart>,
}

/// Where ArgoCD or Flux finds the agent's chart, and the mesh file it puts into the chart's ConfigMap.
#[derive(Debug, Clone)]
pub struct AgentChart {
    /// A Helm repository (`https://...`) or an OCI registry (`oci://...`).
    pub repo_url: String,
    pub version: String,
    /// The mesh file's text (the chart's `mesh` value).
    pub mesh_text: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            repo_url: "https://git.example.com/platform/mesh.git".into(),
            path: "clusters".into(),
            istio_version: "1.28.0".into(),
            istio_chart_repo: "https://istio-release.storage.googleapis.com/charts".into(),
            agent_chart: None,
        }
    }
}

/// One rendered object and the file it belongs in.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub cluster: String,
    pub file: String,
    pub object: Value,
}

/// istiod's multi-primary values for one cluster. `ISTIO_MULTIROOT_MESH` lets a root rotation change
/// `root-cert.pem` without restarting istiod; it goes in the chart's top-level `env` (the istiod chart reads
/// `pilot.*` values only through its defaults). `PROXY_CONFIG_XDS_AGENT` makes proxies take a new root as soon
/// as istiod serves it, not only when their own certificate is re-signed.
pub fn istiod_values(mesh: &Mesh, cluster: &ClusterSettings) -> Value {
    json!({
        "global": {
            "meshID": mesh.mesh_id,
            "multiCluster": {"clusterName": cluster.name},
            "network": cluster.network,
            "enableReaderRBAC": istio_charts_make_reader(mesh),
        },
        "env": {"ISTIO_MULTIROOT_MESH": "true"},
        "meshConfig": {"defaultConfig": {"proxyMetadata": {"PROXY_CONFIG_XDS_AGENT": "true"}}},
    })
}

/// Whether Istio's charts install the reader identity: only when the mesh file leaves it to them (a mesh that
/// runs already, whose charts made it). Otherwise meshtrust owns it (same names), and the charts must not
/// claim it for Helm, which would refuse to adopt it.
fn istio_charts_make_reader(mesh: &Mesh) -> bool {
    mesh.remote_secrets.reader_identity == ReaderIdentity::Istio
}

/// The east-west gateway chart's values (Istio's multi-network setup). `networkGateway` alone sets the
/// network: the chart adds the `topology.istio.io/network` label and the requested network view itself.
pub fn eastwest_values(cluster: &ClusterSettings) -> Value {
    json!({
        "name": "istio-eastwestgateway",
        "labels": {"app": "istio-eastwestgateway", "istio": "eastwestgateway"},
        "networkGateway": cluster.network,
        "service": {"ports": [
            {"name": "status-port", "port": 15021, "targetPort": 15021},
            {"name": "tls", "port": 15443, "targetPort": 15443},
            {"name": "tls-istiod", "port": 15012, "targetPort": 15012},
            {"name": "tls-webhook", "port": 15017, "targetPort": 15017},
        ]},
    })
}

/// The Gateway that exposes the cluster's services to other networks through the east-west gateway
/// (`istioctl`'s `expose-services.yaml`): mTLS passes through on 15443, routed by SNI.
pub fn cross_network_gateway(cluster: &ClusterSettings) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway", "namespace": cluster.istio_namespace},
        "spec": {
            "selector": {"istio": "eastwestgateway"},
            "servers": [{
                "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": ["*.local"],
            }],
        },
    })
}

/// The Istio namespace, labelled with the cluster's network: a core object every flavor includes.
pub fn istio_namespace(cluster: &ClusterSettings) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": cluster.istio_namespace, "labels": {"topology.istio.io/network": cluster.network}},
    })
}

struct Step {
    name: &'static str,
    /// A Git path (OpenBao setup, agent) or a chart with values.
    source: Source,
}

enum Source {
    Git(&'static str),
    Chart(Chart),
}

struct Chart {
    repo_url: String,
    /// The Flux HelmRepository that serves it.
    flux_repo: &'static str,
    chart: &'static str,
    version: String,
    /// The release namespace.
    namespace: String,
    values: Value,
}

impl Chart {
    fn istio(
        chart: &'static str,
        values: Value,
        cluster: &ClusterSettings,
        options: &RenderOptions,
    ) -> Self {
        Chart {
            repo_url: options.istio_chart_repo.clone(),
            flux_repo: "istio",
            chart,
            version: options.istio_version.clone(),
            namespace: cluster.istio_namespace.clone(),
            values,
        }
    }
}

/// The agent's step: the Git path `render agent --out` fills, or the Helm chart with this cluster's values.
fn agent_source(mesh: &Mesh, cluster: &ClusterSettings, options: &RenderOptions) -> Source {
    match &options.agent_chart {
        None => Source::Git("meshtrust-agent"),
        Some(chart) => Source::Chart(Chart {
            values: agent_chart_values(mesh, cluster, &chart.mesh_text),
            repo_url: chart.repo_url.clone(),
            flux_repo: "meshtrust",
            chart: "meshtrust-agent",
            version: chart.version.clone(),
            namespace: mesh.agent.namespace.clone(),
        }),
    }
}

/// The agent chart's values for one cluster. Where Istio's charts own the reader identity, the agent chart
/// must not install it as well (Helm would refuse objects another release owns).
fn agent_chart_values(mesh: &Mesh, cluster: &ClusterSettings, mesh_text: &str) -> Value {
    let mut values = json!({
        "cluster": cluster.name,
        "istioNamespace": cluster.istio_namespace,
        "serviceAccount": {"name": mesh.agent.service_account},
        "mesh": mesh_text,
    });
    if istio_charts_make_reader(mesh) {
        values["readerIdentity"] = json!({"create": false});
    }
    values
}

fn steps(mesh: &Mesh, cluster: &ClusterSettings, options: &RenderOptions) -> Vec<Step> {
    vec![
        Step {
            name: "openbao-setup",
            source: Source::Git("openbao-setup"),
        },
        Step {
            name: "meshtrust-agent",
            source: agent_source(mesh, cluster, options),
        },
        Step {
            name: "istio-base",
            source: Source::Chart(Chart::istio(
                "base",
                json!({"defaultRevision": "default", "global": {"enableReaderRBAC": istio_charts_make_reader(mesh)}}),
                cluster,
                options,
            )),
        },
        Step {
            name: "istiod",
            source: Source::Chart(Chart::istio(
                "istiod",
                istiod_values(mesh, cluster),
                cluster,
                options,
            )),
        },
        Step {
            name: "istio-eastwestgateway",
            source: Source::Chart(Chart::istio(
                "gateway",
                eastwest_values(cluster),
                cluster,
                options,
            )),
        },
    ]
}

/// A Flux HelmRepository in flux-system; `oci://` URLs are OCI registries.
fn helm_repository(name: &str, url: &str) -> Value {
    let mut spec = json!({"interval": "1h", "url": url});
    if url.starts_with("oci://") {
        spec["type"] = json!("oci");
    }
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    })
}

pub fn gitops(mesh: &Mesh, flavor: Flavor, options: &RenderOptions) -> Vec<Rendered> {
    let mut out = Vec::new();
    for cluster in &mesh.clusters {
        let c = &cluster.name;
        out.push(Rendered {
            cluster: c.clone(),
            file: "00-namespace.yaml".into(),
            object: istio_namespace(cluster),
        });
        if flavor == Flavor::Flux {
            out.push(Rendered {
                cluster: c.clone(),
                file: "01-helmrepository.yaml".into(),
                object: helm_repository("istio", &options.istio_chart_repo),
            });
            if let Some(chart) = &options.agent_chart {
                out.push(Rendered {
                    cluster: c.clone(),
                    file: "02-helmrepository-meshtrust.yaml".into(),
                    object: helm_repository("meshtrust", &chart.repo_url),
                });
            }
        }
        let mut previous: Option<String> = None;
        for (wave, step) in steps(mesh, cluster, options).into_iter().enumerate() {
            let name = format!("{}-{c}", step.name);
            let object = match (flavor, &step.source) {
                (Flavor::ArgoCd, source) => {
                    argocd_application(&name, wave, cluster, source, options)
                }
                (Flavor::Flux, Source::Git(dir)) => json!({
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                    "kind": "Kustomization",
                    "metadata": {"name": name, "namespace": "flux-system"},
                    "spec": flux_depends(json!({
                        "interval": "10m",
                        "path": format!("./{}/{c}/{dir}", options.path),
                        "prune": true,
                        "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                        "wait": true,
                    }), &previous),
                }),
                (Flavor::Flux, Source::Chart(chart)) => json!({
                    "apiVersion": "helm.toolkit.fluxcd.io/v2",
                    "kind": "HelmRelease",
                    "metadata": {"name": name, "namespace": "flux-system"},
                    "spec": flux_depends(json!({
                        "interval": "10m",
                        "releaseName": step.name,
                        "targetNamespace": chart.namespace,
                        "chart": {"spec": {
                            "chart": chart.chart,
                            "version": chart.version,
                            "sourceRef": {"kind": "HelmRepository", "name": chart.flux_repo, "namespace": "flux-system"},
                        }},
                        "values": chart.values,
                    }), &previous),
                }),
            };
            out.push(Rendered {
                cluster: c.clone(),
                file: format!("{:02}-{}.yaml", wave + 10, step.name),
                object,
            });
            previous = Some(name);
        }
        // Needs Istio's CRDs, so it is applied after the charts.
        out.push(Rendered {
            cluster: c.clone(),
            file: "20-cross-network-gateway.yaml".into(),
            object: cross_network_gateway(cluster),
        });
    }
    out
}

fn flux_depends(mut spec: Value, previous: &Option<String>) -> Value {
    if let (Some(prev), Some(map)) = (previous, spec.as_object_mut()) {
        map.insert("dependsOn".into(), json!([{"name": prev}]));
    }
    spec
}

fn argocd_application(
    name: &str,
    wave: usize,
    cluster: &ClusterSettings,
    source: &Source,
    options: &RenderOptions,
) -> Value {
    let spec_source = match source {
        Source::Git(dir) => json!({
            "repoURL": options.repo_url,
            "targetRevision": "HEAD",
            "path": format!("{}/{}/{dir}", options.path, cluster.name),
        }),
        Source::Chart(chart) => json!({
            "repoURL": chart.repo_url,
            "chart": chart.chart,
            "targetRevision": chart.version,
            "helm": {"valuesObject": chart.values},
        }),
    };
    let namespace = match source {
        Source::Chart(chart) => chart.namespace.as_str(),
        Source::Git(_) => cluster.istio_namespace.as_str(),
    };
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "namespace": "argocd",
            // Waves run in order and each waits for the previous one to be healthy.
            "annotations": {"argocd.argoproj.io/sync-wave": wave.to_string()},
        },
        "spec": {
            "project": "default",
            "source": spec_source,
            "destination": {"name": cluster.name, "namespace": namespace},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}, "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]},
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn mesh() -> Mesh {
        let text = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: mesh1\nclusters:\n  - name: cluster-a\n    kubeconfig: a\n    network: network1\n  - name: cluster-b\n    kubeconfig: b\n    network: network2\n";
        Mesh::from_yaml(text, "mesh.yaml", PathBuf::from("/")).expect("mesh")
    }

    #[test]
    fn on_a_running_mesh_istios_charts_keep_the_reader_identity_and_meshtrusts_files_leave_it_out()
    {
        let text = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nremoteSecrets:\n  readerIdentity: istio\nclusters:\n  - name: cluster-a\n    kubeconfig: a\n";
        let mesh = Mesh::from_yaml(text, "mesh.yaml", PathBuf::from("/")).expect("mesh");
        let cluster = &mesh.clusters[0];
        assert_eq!(
            istiod_values(&mesh, cluster)["global"]["enableReaderRBAC"],
            true
        );
        let options = RenderOptions {
            agent_chart: Some(AgentChart {
                repo_url: "oci://example/charts".into(),
                version: "0.1.0".into(),
                mesh_text: text.into(),
            }),
            ..RenderOptions::default()
        };
        let rendered = gitops(&mesh, Flavor::Flux, &options);
        let agent = rendered
            .iter()
            .find(|r| r.object["metadata"]["name"] == "meshtrust-agent-cluster-a")
            .expect("agent release");
        assert_eq!(
            agent.object["spec"]["values"]["readerIdentity"]["create"],
            false
        );
        let files = crate::agent::agent_manifests(&mesh, cluster, text, "meshtrust:dev");
        assert!(
            !files
                .iter()
                .any(|o| o["metadata"]["name"] == "istio-reader-service-account"),
            "render agent leaves Istio's reader identity out"
        );
        // A new mesh: meshtrust owns it, and Istio's charts are told not to make it.
        let fresh = super::tests::mesh();
        assert_eq!(
            istiod_values(&fresh, &fresh.clusters[0])["global"]["enableReaderRBAC"],
            false
        );
        let files = crate::agent::agent_manifests(&fresh, &fresh.clusters[0], "", "meshtrust:dev");
        assert!(
            files
                .iter()
                .any(|o| o["metadata"]["name"] == "istio-reader-service-account")
        );
    }

    #[test]
    fn flux_chains_every_step_with_depends_on() {
        let r = gitops(&mesh(), Flavor::Flux, &RenderOptions::default());
        let a: Vec<&Rendered> = r.iter().filter(|x| x.cluster == "cluster-a").collect();
        let names: Vec<&str> = a
            .iter()
            .filter_map(|x| x.object["metadata"]["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "istio-system",
                "istio",
                "openbao-setup-cluster-a",
                "meshtrust-agent-cluster-a",
                "istio-base-cluster-a",
                "istiod-cluster-a",
                "istio-eastwestgateway-cluster-a",
                "cross-network-gateway"
            ]
        );
        assert_eq!(
            a[6].object["spec"]["dependsOn"][0]["name"],
            "istiod-cluster-a"
        );
        assert_eq!(
            a[5].object["spec"]["values"]["global"]["multiCluster"]["clusterName"],
            "cluster-a"
        );
        assert!(a[2].object["spec"].get("dependsOn").is_none());
    }

    #[test]
    fn argocd_orders_by_sync_wave() {
        let r = gitops(&mesh(), Flavor::ArgoCd, &RenderOptions::default());
        let waves: Vec<&str> = r
            .iter()
            .filter(|x| x.cluster == "cluster-b" && x.object["kind"] == "Application")
            .filter_map(|x| {
                x.object["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"].as_str()
            })
            .collect();
        assert_eq!(waves, ["0", "1", "2", "3", "4"]);
        let istiod = r
            .iter()
            .find(|x| x.object["metadata"]["name"] == "istiod-cluster-b")
            .expect("istiod");
        assert_eq!(
            istiod.object["spec"]["source"]["helm"]["valuesObject"]["global"]["network"],
            "network2"
        );
    }
}

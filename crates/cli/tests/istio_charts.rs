//! `render gitops` checked by Istio's own charts: `helm template` of `base`, `istio-control/istio-discovery` and
//! `gateway` from the istio module (the version `scripts/build-istio` builds) with the values meshtrust renders,
//! then every object server-side dry-run applied to an API server that has Istio's CRDs, together with the
//! rendered `cross-network-gateway`. The charts render no reader objects (meshtrust owns them). Helm comes from
//! `scripts/build-helm`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use meshtrust_testenv::{ISTIO_VERSION, install_istio_crds};
use serde_json::Value;
use support::Mesh;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn helm() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/build-helm")).arg("print-path");
    let path = PathBuf::from(run(cmd).trim());
    let mut cmd = Command::new(path);
    let home = std::env::temp_dir().join("meshtrust-istio-charts-helm");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// Istio's charts in the Go module cache, from the module `scripts/build-istio` built istiod from.
fn charts() -> PathBuf {
    let mut cmd = Command::new("go");
    cmd.args(["env", "GOMODCACHE"]);
    let dir = PathBuf::from(run(cmd).trim())
        .join(format!("istio.io/istio@{ISTIO_VERSION}"))
        .join("manifests/charts");
    assert!(
        dir.is_dir(),
        "Istio's charts are not at {}: run scripts/build-istio",
        dir.display()
    );
    dir
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        })
        .map(|d| serde_saphyr::from_str::<Value>(d).expect("each document parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of one of Istio's charts with `values` (as `render gitops` wrote them).
fn template(release: &str, chart: &str, values: &Value) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("values.json");
    std::fs::write(&file, values.to_string()).expect("values");
    let mut cmd = helm();
    cmd.args(["template", release])
        .arg(charts().join(chart))
        .args(["--namespace", "istio-system", "--values"])
        .arg(&file);
    documents(&run(cmd))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_charts_take_the_rendered_values_and_the_api_server_accepts_the_result() {
    let mesh = Mesh::start(1, "");
    mesh.ok(&["apply"]);
    let cluster = &mesh.env.clusters[0];
    install_istio_crds(cluster).await.expect("Istio's CRDs");
    let rendered = documents(&mesh.ok(&["render", "gitops", "--flavor", "flux"]));
    let values = |release: &str| -> Value {
        rendered
            .iter()
            .find(|d| d["kind"] == "HelmRelease" && d["spec"]["releaseName"] == release)
            .map(|d| d["spec"]["values"].clone())
            .unwrap_or_else(|| panic!("a HelmRelease {release}"))
    };
    let mut objects = Vec::new();
    objects.extend(template("istio-base", "base", &values("istio-base")));
    let istiod = template("istiod", "istio-control/istio-discovery", &values("istiod"));
    let configmap = istiod
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "istio")
        .expect("istiod's mesh ConfigMap");
    let mesh_config = configmap["data"]["mesh"].as_str().expect("mesh config");
    assert!(
        mesh_config.contains("PROXY_CONFIG_XDS_AGENT"),
        "{mesh_config}"
    );
    let deployment = istiod
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("istiod Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("ISTIO_MULTIROOT_MESH"),
        "the chart passes env to istiod: {env}"
    );
    objects.extend(istiod);
    let gateway = template(
        "istio-eastwestgateway",
        "gateway",
        &values("istio-eastwestgateway"),
    );
    let gw_deployment = gateway
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("gateway Deployment");
    assert_eq!(
        gw_deployment["spec"]["template"]["metadata"]["labels"]["topology.istio.io/network"],
        "network-cluster-a",
        "networkGateway sets the network label"
    );
    objects.extend(gateway);
    objects.extend(rendered.iter().filter(|d| d["kind"] == "Gateway").cloned());

    // The reader identity is meshtrust's: no chart object may claim it for Helm.
    let readers: Vec<String> = objects
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .filter(|n| n.starts_with("istio-reader"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        readers,
        Vec::<String>::new(),
        "reader objects rendered by the charts"
    );

    let client = cluster.client().await.expect("client");
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let params = PatchParams::apply("meshtrust-test").force().dry_run();
    let mut applied = Vec::new();
    for object in &objects {
        let (group, version) = match object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .split_once('/')
        {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                object["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
        };
        let kind = object["kind"].as_str().expect("kind");
        let gvk = GroupVersionKind::gvk(&group, &version, kind);
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server knows {gvk:?}"));
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("istio-system");
            Api::namespaced_with(client.clone(), ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let typed: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        api.patch(&name, &params, &Patch::Apply(&typed))
            .await
            .unwrap_or_else(|e| panic!("dry-run apply of {kind} {name}: {e}"));
        applied.push(format!("{kind}/{name}"));
        let _: &ApiResource = &resource;
    }
    eprintln!(
        "{} objects accepted (server-side dry-run): {applied:?}",
        applied.len()
    );
    assert!(applied.iter().any(|a| a == "Gateway/cross-network-gateway"));
}

//! `render`: GitOps manifests pinned by golden files, and core objects accepted by a real API server
//! (server-side dry-run).

mod support;

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::Mesh;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render(flavor: &str) -> String {
    render_with(flavor, &[])
}

fn render_with(flavor: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["render", "gitops", "--flavor", flavor])
        .args(extra)
        .arg("--mesh")
        .arg(golden_dir().join("mesh.yaml"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Compares with the golden file; `UPDATE_GOLDEN=1` rewrites it after a deliberate change.
fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected =
        std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 creates it)");
    assert_eq!(
        actual, expected,
        "{name} changed; if deliberate, rerun with UPDATE_GOLDEN=1 and review the diff"
    );
}

#[test]
fn argocd_manifests_match_the_golden_file() {
    check_golden("gitops-argocd.yaml", &render("argocd"));
}

#[test]
fn flux_manifests_match_the_golden_file() {
    check_golden("gitops-flux.yaml", &render("flux"));
}

const CHART: [&str; 6] = [
    "--agent-from",
    "chart",
    "--chart-repo",
    "https://charts.example.com/meshtrust",
    "--chart-version",
    "0.1.0",
];

#[test]
fn argocd_from_the_agent_chart_matches_the_golden_file() {
    check_golden("gitops-argocd-chart.yaml", &render_with("argocd", &CHART));
}

#[test]
fn flux_from_the_agent_chart_matches_the_golden_file() {
    check_golden("gitops-flux-chart.yaml", &render_with("flux", &CHART));
}

#[test]
fn the_agent_chart_needs_its_repository() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args([
            "render",
            "gitops",
            "--flavor",
            "flux",
            "--agent-from",
            "chart",
            "--mesh",
        ])
        .arg(golden_dir().join("mesh.yaml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--chart-repo"), "{stderr}");
}

#[test]
fn an_oci_chart_repository_is_an_oci_helm_repository_for_flux() {
    let yaml = render_with(
        "flux",
        &[
            "--agent-from",
            "chart",
            "--chart-repo",
            "oci://ghcr.io/meshtrust/charts",
        ],
    );
    let repos: Vec<serde_json::Value> = documents(&yaml)
        .into_iter()
        .filter(|d| d["kind"] == "HelmRepository" && d["metadata"]["name"] == "meshtrust")
        .collect();
    assert_eq!(repos.len(), 2, "one per cluster");
    assert_eq!(repos[0]["spec"]["type"], "oci");
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    yaml.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty())
        })
        .map(|d| serde_saphyr::from_str::<serde_json::Value>(d).expect("each document parses"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_core_objects_pass_a_server_side_dry_run() {
    let mesh = Mesh::start(2, "");
    mesh.ok(&["apply"]);
    let client_a = mesh.env.clusters[0].client().await.expect("client");
    let client_b = mesh.env.clusters[1].client().await.expect("client");
    let dry = PatchParams::apply("meshtrust-test").force().dry_run();

    for flavor in ["argocd", "flux"] {
        let out = mesh.ok(&["render", "gitops", "--flavor", flavor]);
        let core: Vec<serde_json::Value> = documents(&out)
            .into_iter()
            .filter(|d| d["apiVersion"] == "v1")
            .collect();
        assert_eq!(core.len(), 2, "one Namespace per cluster");
        for ns in core {
            let name = ns["metadata"]["name"].as_str().expect("name").to_string();
            let typed: Namespace = serde_json::from_value(ns).expect("a valid Namespace");
            Api::<Namespace>::all(client_a.clone())
                .patch(&name, &dry, &Patch::Apply(&typed))
                .await
                .expect("dry-run namespace");
        }
    }

    // istioctl's manifest as meshtrust renders it from OpenBao: accepted by the API server as a Secret.
    let manifest = mesh.ok(&["render", "remote-secret", "--cluster", "cluster-b"]);
    assert!(
        manifest.starts_with(
            "# This file is autogenerated, do not edit.\napiVersion: v1\nkind: Secret\n"
        ),
        "{manifest}"
    );
    assert!(manifest.ends_with("---\n"));
    let doc = documents(&manifest).remove(0);
    let secret: Secret = serde_json::from_value(doc).expect("a valid Secret");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = Api::<Secret>::namespaced(client_b, "istio-system")
        .create(&params, &secret)
        .await
        .expect("dry-run create");
    assert_eq!(
        created.metadata.labels.expect("labels")["istio/multiCluster"],
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_deploy_files_pass_a_server_side_dry_run() {
    let mesh = Mesh::start(1, "");
    let client = mesh.env.clusters[0].client().await.expect("client");
    support::create_namespace(&client, "istio-system").await;
    let out = mesh.ok(&["render", "agent", "--cluster", "cluster-a"]);
    let objects = documents(&out);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            // The reader identity peers use: the agent may not write RBAC, so its deploy files carry it.
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment"
        ]
    );
    let deployment = &objects[10];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    support::create_objects(&client, &objects, true).await;
}

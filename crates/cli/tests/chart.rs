//! The Helm chart `charts/meshtrust-agent`: `helm lint`, `helm template` accepted by a real API server
//! (server-side dry-run), and the same RBAC as `meshtrust render agent`. Helm is built by `scripts/build-helm`;
//! without it these tests fail (they never skip).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use support::Mesh;
use support::helm::{chart, documents, helm, kinds, repo, run, template};

#[test]
fn helm_lint_is_clean_with_the_default_values_and_with_a_cluster() {
    let mut cmd = helm();
    cmd.args(["lint", "--strict"]).arg(chart());
    let out = run(cmd);
    assert!(out.contains("0 chart(s) failed"), "{out}");

    let mesh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mesh.yaml");
    let mut cmd = helm();
    cmd.args(["lint", "--strict", "--namespace", "istio-system"])
        .arg(chart())
        .args(["--set", "cluster=cluster-a", "--set-file"])
        .arg(format!("mesh={}", mesh.display()));
    let out = run(cmd);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_schema_rejects_a_misspelt_value() {
    let mut cmd = helm();
    cmd.arg("template")
        .arg(chart())
        .args(["--set", "replicas=3"]);
    let out = cmd.output().expect("run helm");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replicas"), "{stderr}");
}

#[test]
fn default_values_install_only_the_service_account_and_rbac() {
    let mut cmd = helm();
    cmd.arg("template")
        .arg("meshtrust-agent")
        .arg(chart())
        .args(["--namespace", "istio-system"]);
    let objects = documents(&run(cmd));
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    let mut cmd = helm();
    cmd.arg("template")
        .arg("meshtrust-agent")
        .arg(chart())
        .args([
            "--namespace",
            "istio-system",
            "--set",
            "readerIdentity.create=false",
        ]);
    let without_reader = documents(&run(cmd));
    assert!(
        without_reader
            .iter()
            .all(|o| o["metadata"]["name"] != "istio-reader-service-account"),
        "readerIdentity.create=false leaves the reader identity to Istio's charts"
    );
}

#[test]
fn the_service_monitor_is_optional() {
    let mesh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mesh.yaml");
    let off = template("istio-system", "cluster-a", &mesh, &[]);
    assert!(!kinds(&off).contains(&"ServiceMonitor"));
    let on = template(
        "istio-system",
        "cluster-a",
        &mesh,
        &["serviceMonitor.enabled=true"],
    );
    let monitor = on
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert!(kinds(&on).contains(&"Service"));
}

/// OpenBao's node list and CA reach the agent as BAO_ADDRS and BAO_CACERT (a file from the chart's ConfigMap or
/// an existing Secret); two CA sources at once are refused. The pods use them for real in node_agent.rs.
#[test]
fn openbao_addresses_and_ca_reach_the_agent() {
    let mesh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mesh.yaml");
    let ca = std::env::temp_dir().join(format!("meshtrust-chart-ca-{}.pem", std::process::id()));
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("ca");
    let env_of = |objects: &[Value]| -> Value {
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("Deployment");
        deployment["spec"]["template"]["spec"]["containers"][0]["env"].clone()
    };
    let mut cmd = helm();
    cmd.args(["template", "meshtrust-agent"])
        .arg(chart())
        .args(["--namespace", "istio-system", "--set", "cluster=cluster-a"])
        .arg("--set-file")
        .arg(format!("mesh={}", mesh.display()))
        .arg("--set-file")
        .arg(format!("openbao.caCert={}", ca.display()))
        .args([
            "--set",
            "openbao.addresses={https://bao-0:8200,https://bao-1:8200}",
        ]);
    let objects = documents(&run(cmd));
    let env = env_of(&objects);
    let value = |name: &str| {
        env.as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .map(|v| v["value"].clone())
    };
    assert_eq!(
        value("BAO_ADDRS"),
        Some(json!("https://bao-0:8200 https://bao-1:8200"))
    );
    assert_eq!(
        value("BAO_CACERT"),
        Some(json!("/etc/meshtrust-openbao-ca/ca.crt"))
    );
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "meshtrust-openbao-ca")
        .expect("the CA's ConfigMap");
    assert!(
        config_map["data"]["ca.crt"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    );

    let from_secret = template(
        "istio-system",
        "cluster-a",
        &mesh,
        &["openbao.caCertSecret.name=bao-ca"],
    );
    let volumes = from_secret
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment")["spec"]["template"]["spec"]["volumes"]
        .clone();
    assert!(
        volumes.to_string().contains(r#""secretName":"bao-ca""#),
        "{volumes}"
    );

    let mut both = helm();
    both.args(["template", "meshtrust-agent"])
        .arg(chart())
        .args([
            "--set",
            "cluster=cluster-a",
            "--set",
            "openbao.caCertSecret.name=bao-ca",
        ])
        .arg("--set-file")
        .arg(format!("mesh={}", mesh.display()))
        .arg("--set-file")
        .arg(format!("openbao.caCert={}", ca.display()));
    let out = both.output().expect("helm");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set at most one of openbao.caCert"));
    let _ = std::fs::remove_file(&ca);
}

/// Role and ClusterRole rules, and every binding's roleRef and subjects, keyed by kind/namespace/name.
fn rbac(objects: &[Value]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = objects
        .iter()
        .filter_map(|o| {
            let kind = o["kind"].as_str()?;
            let key = format!(
                "{kind}/{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str()?
            );
            match kind {
                "Role" | "ClusterRole" => Some((key, o["rules"].clone())),
                "RoleBinding" | "ClusterRoleBinding" => Some((
                    key,
                    json!({"roleRef": o["roleRef"], "subjects": o["subjects"]}),
                )),
                "ServiceAccount" => Some((key, Value::Null)),
                _ => None,
            }
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_chart_grants_the_same_rbac_as_render_agent() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            "",
            "istio-system",
            "meshtrust-agent",
            "istio-system",
            vec![],
        ),
        (
            "agent:\n  namespace: meshtrust-system\n  serviceAccount: mt-agent\n",
            "meshtrust-system",
            "mt-agent",
            "istio-x",
            vec!["serviceAccount.name=mt-agent", "istioNamespace=istio-x"],
        ),
    ];
    for (i, (agent, namespace, _sa, istio_ns, sets)) in cases.iter().enumerate() {
        let mesh = dir.path().join(format!("mesh-{i}.yaml"));
        std::fs::write(
            &mesh,
            format!(
                "apiVersion: meshtrust.dev/v1\nkind: Mesh\n{agent}clusters:\n  - name: cluster-a\n    kubeconfig: kc\n    istioNamespace: {istio_ns}\n  - name: cluster-b\n    kubeconfig: kc\n"
            ),
        )
        .expect("mesh file");
        let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
            .args(["render", "agent", "--cluster", "cluster-a", "--mesh"])
            .arg(&mesh)
            .output()
            .expect("run meshtrust");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = rbac(&documents(&String::from_utf8_lossy(&out.stdout)));
        let charted = rbac(&template(namespace, "cluster-a", &mesh, sets));
        // The agent's ServiceAccount and five RBAC objects, and the reader identity's three.
        assert_eq!(rendered.len(), 9, "{rendered:?}");
        let role = &rendered
            .iter()
            .find(|(k, _)| k.starts_with("Role/"))
            .expect("Role")
            .1;
        assert!(
            role.to_string().contains("istio-remote-secret-cluster-b"),
            "the peer's remote secret is named: {role}"
        );
        assert_eq!(charted, rendered, "case {i}: chart and render agent differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_template_passes_a_server_side_dry_run() {
    let mesh = Mesh::start(1, "");
    let client = mesh.env.clusters[0].client().await.expect("client");
    // The release namespace exists before a chart is installed (helm install -n ... --create-namespace).
    support::create_namespace(&client, "istio-system").await;
    let objects = template(
        "istio-system",
        "cluster-a",
        &mesh.file,
        &["openbao.address=https://openbao.example:8200"],
    );
    assert_eq!(
        kinds(&objects),
        [
            "PodDisruptionBudget",
            "ServiceAccount",
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment"
        ]
    );
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["args"][2], "cluster-a");
    let mesh_text = std::fs::read_to_string(&mesh.file).expect("mesh file");
    let configmap = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("ConfigMap");
    assert_eq!(
        configmap["data"]["mesh.yaml"].as_str(),
        Some(mesh_text.as_str())
    );

    support::create_objects(&client, &objects, true).await;
}

/// `render gitops --agent-from chart` hands the chart values its schema accepts, and the chart renders the
/// agent for that cluster from them (what ArgoCD does with the Application's valuesObject).
#[test]
fn render_gitops_values_for_the_chart_install_the_agent() {
    let mesh = repo().join("crates/cli/tests/golden/mesh.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args([
            "render",
            "gitops",
            "--flavor",
            "argocd",
            "--agent-from",
            "chart",
        ])
        .args([
            "--chart-repo",
            "https://charts.example.com/meshtrust",
            "--mesh",
        ])
        .arg(&mesh)
        .output()
        .expect("render gitops");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = documents(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .find(|d| d["metadata"]["name"] == "meshtrust-agent-cluster-b")
        .expect("the agent's Application");
    assert_eq!(app["spec"]["source"]["chart"], "meshtrust-agent");
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("values.json");
    std::fs::write(
        &values,
        app["spec"]["source"]["helm"]["valuesObject"].to_string(),
    )
    .expect("values");
    let namespace = app["spec"]["destination"]["namespace"]
        .as_str()
        .expect("namespace");
    let mut cmd = helm();
    cmd.args(["template", "meshtrust-agent"])
        .arg(chart())
        .args(["--namespace", namespace, "-f"])
        .arg(&values);
    let objects = documents(&run(cmd));
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("cluster-b"), "{args}");
    let config = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the mesh ConfigMap");
    assert_eq!(
        config["data"]["mesh.yaml"].as_str().map(str::trim),
        std::fs::read_to_string(&mesh)
            .ok()
            .as_deref()
            .map(str::trim)
    );
}

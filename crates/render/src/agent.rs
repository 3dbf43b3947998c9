//! The meshtrust agent's Kubernetes manifests for one cluster. Pure data.

use meshtrust_core::istio;
use meshtrust_core::mesh::{ClusterSettings, Mesh, ReaderIdentity};
use meshtrust_core::names::{
    AGENT_NAME, CACERTS, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MESH_CONFIG_MAP, remote_secret_name,
};
use meshtrust_core::ports::RbacRule;
use serde_json::{Value, json};

/// The agent's deploy files for one cluster: its ServiceAccount, least-privilege RBAC, the reader identity
/// peers use (the agent may not write RBAC, so the deploy files carry it), the mesh file as a ConfigMap, and a
/// hardened Deployment (non-root, read-only root filesystem, probes). Two replicas: a Lease
/// elects the one that writes.
pub fn agent_manifests(
    mesh: &Mesh,
    cluster: &ClusterSettings,
    mesh_file: &str,
    image: &str,
) -> Vec<Value> {
    agent_manifests_with(mesh, cluster, mesh_file, image, &AgentOpenBao::default())
}

/// How the agent reaches OpenBao besides the mesh file's address: every node of an HA cluster (`BAO_ADDRS`)
/// and the CA of OpenBao's TLS certificate (`BAO_CACERT`, from a ConfigMap the deploy files carry).
#[derive(Debug, Clone, Default)]
pub struct AgentOpenBao {
    pub addresses: Vec<String>,
    pub ca_pem: Option<String>,
}

/// Where the agent's container finds OpenBao's CA (the same path as the Helm chart's).
const OPENBAO_CA_DIR: &str = "/etc/meshtrust-openbao-ca";
const OPENBAO_CA_CONFIG_MAP: &str = "meshtrust-openbao-ca";

/// [`agent_manifests`] with OpenBao's node list and CA.
pub fn agent_manifests_with(
    mesh: &Mesh,
    cluster: &ClusterSettings,
    mesh_file: &str,
    image: &str,
    openbao: &AgentOpenBao,
) -> Vec<Value> {
    let ns = &mesh.agent.namespace;
    let sa = &mesh.agent.service_account;
    let labels =
        json!({"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/part-of": "meshtrust"});
    let meta = |name: &str, namespaced: bool| {
        let mut m = json!({"name": name, "labels": labels});
        if namespaced {
            m["namespace"] = json!(ns);
        }
        m
    };
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
    ];
    if let Some(addr) = &mesh.openbao.address {
        env.push(json!({"name": "BAO_ADDR", "value": addr}));
    }
    if !openbao.addresses.is_empty() {
        env.push(json!({"name": "BAO_ADDRS", "value": openbao.addresses.join(" ")}));
    }
    let mut mounts = vec![json!({"name": "mesh", "mountPath": "/etc/meshtrust", "readOnly": true})];
    let mut volumes = vec![json!({"name": "mesh", "configMap": {"name": MESH_CONFIG_MAP}})];
    if openbao.ca_pem.is_some() {
        env.push(json!({"name": "BAO_CACERT", "value": format!("{OPENBAO_CA_DIR}/ca.crt")}));
        mounts.push(json!({"name": "openbao-ca", "mountPath": OPENBAO_CA_DIR, "readOnly": true}));
        volumes.push(json!({"name": "openbao-ca", "configMap": {"name": OPENBAO_CA_CONFIG_MAP}}));
    }
    let mut objects =
        vec![json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(sa, true)})];
    objects.extend(agent_rbac(mesh, cluster, &labels));
    // On a mesh whose Istio charts made the reader identity, those objects are theirs (Helm's): writing them
    // here would take them over, and the chart would take them back.
    if mesh.remote_secrets.reader_identity == ReaderIdentity::Meshtrust {
        objects.extend(reader_identity(cluster));
    }
    objects.extend([
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(MESH_CONFIG_MAP, true), "data": {"mesh.yaml": mesh_file}}),
    ]);
    if let Some(ca) = &openbao.ca_pem {
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(OPENBAO_CA_CONFIG_MAP, true), "data": {"ca.crt": ca}}));
    }
    objects.extend([
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(AGENT_NAME, true),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": sa,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "agent",
                            "image": image,
                            "args": ["agent", "--cluster", cluster.name, "--mesh", "/etc/meshtrust/mesh.yaml", "--log-format", "json"],
                            "env": env,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": mounts,
                        }],
                        "volumes": volumes,
                    },
                },
            },
        }),
    ]);
    objects
}

fn rule_json(rule: &RbacRule) -> Value {
    let mut out =
        json!({"apiGroups": rule.api_groups, "resources": rule.resources, "verbs": rule.verbs});
    if !rule.resource_names.is_empty() {
        out["resourceNames"] = json!(rule.resource_names);
    }
    out
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[String]) -> RbacRule {
    let mut rule = RbacRule::new(groups, resources, verbs);
    rule.resource_names = names.to_vec();
    rule
}

/// The agent's rights in its Istio namespace: exactly its job, by name wherever Kubernetes can check a name.
pub fn agent_role_rules(mesh: &Mesh, cluster: &ClusterSettings) -> Vec<RbacRule> {
    let mut owned = vec![CACERTS.to_string()];
    owned.extend(
        mesh.clusters
            .iter()
            .filter(|c| c.name != cluster.name)
            .map(|c| remote_secret_name(&c.name)),
    );
    let reader = [istio::READER_SERVICE_ACCOUNT.to_string()];
    let lease = [AGENT_NAME.to_string()];
    vec![
        // The agent lists remote secrets by label and watches them for drift. Kubernetes cannot limit list
        // and watch by name, so limiting get would not hide any Secret's content either.
        rule(&[""], &["secrets"], &["get", "list", "watch"], &[]),
        // A create names no existing object, so Kubernetes cannot limit it by name.
        rule(&[""], &["secrets"], &["create"], &[]),
        // Only the Secrets it owns: cacerts and one remote secret per peer in the mesh file.
        rule(&[""], &["secrets"], &["update", "patch", "delete"], &owned),
        rule(&[""], &["serviceaccounts"], &["get"], &reader),
        rule(&[""], &["serviceaccounts/token"], &["create"], &reader),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "update"],
            &lease,
        ),
        rule(&["coordination.k8s.io"], &["leases"], &["create"], &[]),
        // Root rotation: the roots istiod actually serves.
        rule(
            &[""],
            &["configmaps"],
            &["get"],
            &["istio-ca-root-cert".to_string()],
        ),
        // Whether another controller still writes a Secret it would write (ESO, VSO, cert-manager): read only.
        rule(
            &["external-secrets.io"],
            &["externalsecrets"],
            &["list"],
            &[],
        ),
        rule(
            &["secrets.hashicorp.com"],
            &["vaultstaticsecrets"],
            &["list"],
            &[],
        ),
        rule(&["cert-manager.io"], &["certificates"], &["list"], &[]),
    ]
}

/// Cluster-wide, the agent only reads: its namespace and the reader identity's RBAC (to report drift).
/// It never writes RBAC: a right to create, update, escalate or bind roles would let it grant itself anything.
pub fn agent_cluster_rules(cluster: &ClusterSettings) -> Vec<RbacRule> {
    let reader_role = [istio::reader_cluster_role_name(&cluster.istio_namespace)];
    vec![
        rule(
            &[""],
            &["namespaces"],
            &["get"],
            std::slice::from_ref(&cluster.istio_namespace),
        ),
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterroles", "clusterrolebindings"],
            &["get"],
            &reader_role,
        ),
    ]
}

fn agent_rbac(mesh: &Mesh, cluster: &ClusterSettings, labels: &Value) -> Vec<Value> {
    let ns = &mesh.agent.namespace;
    let sa = &mesh.agent.service_account;
    let istio_ns = &cluster.istio_namespace;
    let subjects = json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]);
    let rules = |rules: Vec<RbacRule>| rules.iter().map(rule_json).collect::<Vec<_>>();
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": AGENT_NAME, "namespace": istio_ns, "labels": labels},
            "rules": rules(agent_role_rules(mesh, cluster)),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": AGENT_NAME, "namespace": istio_ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT_NAME},
            "subjects": subjects,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": AGENT_NAME, "labels": labels},
            "rules": rules(agent_cluster_rules(cluster)),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": AGENT_NAME, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT_NAME},
            "subjects": subjects,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{AGENT_NAME}-auth-delegator"), "labels": labels},
            // OpenBao reviews the agent's login token with the token itself.
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": subjects,
        }),
    ]
}

/// The reader identity peers' istiod use (`istio-reader-service-account`, Istio's reader ClusterRole and its
/// binding), labelled as the engine writes it so that `meshtrust apply` recognises and repairs it.
pub fn reader_identity(cluster: &ClusterSettings) -> Vec<Value> {
    let ns = &cluster.istio_namespace;
    let role = istio::reader_cluster_role_name(ns);
    let labels = json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE, "app": "istio-reader"});
    let rules: Vec<Value> = istio::reader_rules().iter().map(rule_json).collect();
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": istio::READER_SERVICE_ACCOUNT, "namespace": ns, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": role, "labels": labels}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": istio::READER_SERVICE_ACCOUNT, "namespace": ns}]}),
    ]
}

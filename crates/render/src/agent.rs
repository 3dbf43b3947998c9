//! The meshtrust agent's Kubernetes manifests for one cluster. Pure data.

use meshtrust_core::istio;
use meshtrust_core::mesh::{ClusterSettings, Mesh};
use meshtrust_core::names::{AGENT_NAME, MESH_CONFIG_MAP};
use serde_json::{Value, json};

/// The agent's deploy files for one cluster: its ServiceAccount, least-privilege RBAC, the mesh file as a
/// ConfigMap, and a hardened Deployment (non-root, read-only root filesystem, probes). Two replicas: a Lease
/// elects the one that writes.
pub fn agent_manifests(
    mesh: &Mesh,
    cluster: &ClusterSettings,
    mesh_file: &str,
    image: &str,
) -> Vec<Value> {
    let ns = &mesh.agent.namespace;
    let sa = &mesh.agent.service_account;
    let istio_ns = &cluster.istio_namespace;
    let reader_role = istio::reader_cluster_role_name(istio_ns);
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
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(sa, true)}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": AGENT_NAME, "namespace": istio_ns, "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create"]},
                {"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [istio::READER_SERVICE_ACCOUNT], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
                // Root rotation: the roots istiod actually serves.
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["istio-ca-root-cert"], "verbs": ["get"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": AGENT_NAME, "namespace": istio_ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta(AGENT_NAME, false),
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
                // Creating a ClusterRole cannot be limited by name; reading, updating and granting it can.
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings"], "verbs": ["create"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": [reader_role], "verbs": ["get", "update", "escalate", "bind"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterrolebindings"], "resourceNames": [reader_role], "verbs": ["get", "update"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(AGENT_NAME, false),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(&format!("{AGENT_NAME}-auth-delegator"), false),
            // OpenBao reviews the agent's login token with the token itself.
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(MESH_CONFIG_MAP, true), "data": {"mesh.yaml": mesh_file}}),
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
                            "volumeMounts": [{"name": "mesh", "mountPath": "/etc/meshtrust", "readOnly": true}],
                        }],
                        "volumes": [{"name": "mesh", "configMap": {"name": MESH_CONFIG_MAP}}],
                    },
                },
            },
        }),
    ]
}

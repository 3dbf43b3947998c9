//! Converting RBAC objects between k8s-openapi and the core's typed port. Kubernetes omits empty lists, so
//! both directions treat "absent" and "empty" alike and comparisons stay exact.

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshtrust_core::ports::{ObjectBody, RbacRule, ServiceAccountRef};

fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

pub fn to_policy_rule(rule: &RbacRule) -> PolicyRule {
    PolicyRule {
        api_groups: non_empty(&rule.api_groups),
        resources: non_empty(&rule.resources),
        verbs: rule.verbs.clone(),
        resource_names: non_empty(&rule.resource_names),
        non_resource_urls: None,
    }
}

pub fn role_body(rules: Option<Vec<PolicyRule>>) -> ObjectBody {
    let rules = rules
        .unwrap_or_default()
        .into_iter()
        .map(|r| RbacRule {
            api_groups: r.api_groups.unwrap_or_default(),
            resources: r.resources.unwrap_or_default(),
            verbs: r.verbs,
            resource_names: r.resource_names.unwrap_or_default(),
        })
        .collect();
    ObjectBody::ClusterRole { rules }
}

/// Subjects other than ServiceAccounts are kept as unnamed entries so a binding that grants someone else
/// never compares equal to the one meshtrust wants.
pub fn binding_body(role_ref: RoleRef, subjects: Option<Vec<Subject>>) -> ObjectBody {
    let subjects = subjects
        .unwrap_or_default()
        .into_iter()
        .map(|s| ServiceAccountRef {
            namespace: if s.kind == "ServiceAccount" {
                s.namespace.unwrap_or_default()
            } else {
                format!("{}:", s.kind)
            },
            name: s.name,
        })
        .collect();
    let cluster_role = if role_ref.kind == "ClusterRole" {
        role_ref.name
    } else {
        format!("{}:{}", role_ref.kind, role_ref.name)
    };
    ObjectBody::ClusterRoleBinding {
        cluster_role,
        subjects,
    }
}

pub fn to_binding(
    metadata: ObjectMeta,
    cluster_role: &str,
    subjects: &[ServiceAccountRef],
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role.to_string(),
        },
        subjects: Some(
            subjects
                .iter()
                .map(|s| Subject {
                    kind: "ServiceAccount".into(),
                    name: s.name.clone(),
                    namespace: Some(s.namespace.clone()),
                    api_group: None,
                })
                .collect(),
        ),
    }
}

//! Whose a Kubernetes auth mount is. meshtrust shares the mounts a mesh already has (seed 000's
//! `kubernetes_cluster_a` is also where the Vault Secrets Operator and cert-manager log in): it adds its own
//! role beside theirs, never rewrites a mount it did not create, and removes only what it made.

use serde::Serialize;

use crate::bao_plan::AGENT_ROLE;
use crate::facts::AuthFacts;
use crate::mesh::ClusterSettings;
use crate::names::auth_mount_cluster;
use crate::plan::{Action, Change, Op, Plan, Target};

/// A Kubernetes auth mount the mesh file no longer uses that holds something meshtrust made for a cluster that
/// left (or moved to another mount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepartedAuth {
    /// The cluster the mount or role was made for.
    pub cluster: String,
    /// meshtrust created the mount itself (its description says so).
    pub made_by_meshtrust: bool,
    /// meshtrust's agent role is in it.
    pub agent_role: bool,
    /// The other roles in it (other tools'); `None` when they could not be listed.
    pub other_roles: Option<Vec<String>>,
}

impl DepartedAuth {
    /// The whole mount may go only if meshtrust made it and nothing but meshtrust's role is in it.
    pub fn mount_may_go(&self) -> bool {
        self.made_by_meshtrust && self.other_roles.as_ref().is_some_and(Vec::is_empty)
    }
}

/// meshtrust made this mount: it carries the description meshtrust gives the mounts it creates. A mount
/// without one (made by hand, by another tool, or by a meshtrust release before descriptions) is not
/// meshtrust's: it is never configured, described or removed, only given meshtrust's role.
pub fn made_by_meshtrust(auth: &AuthFacts) -> bool {
    auth_mount_cluster(&auth.description).is_some()
}

fn roles_text(roles: Option<&Vec<String>>) -> String {
    match roles {
        None => "roles meshtrust could not list".into(),
        Some(r) if r.is_empty() => "no other role".into(),
        Some(r) => format!("role(s) {}", r.join(", ")),
    }
}

/// What `plan` says about a mesh cluster's auth mount that somebody else made: what it found and that it
/// leaves it.
pub fn foreign_mount_note(cluster: &ClusterSettings, auth: &AuthFacts) -> String {
    let mount = &cluster.auth_mount;
    let made_by = if auth.description.is_empty() {
        "has no meshtrust description".to_string()
    } else {
        format!("is described {:?}", auth.description)
    };
    let config = match &auth.kubernetes_host {
        Some(host) => format!("its config (TokenReview at {host})"),
        None => "its (empty) config".into(),
    };
    format!(
        "auth/{mount} (cluster {}) was not made by meshtrust (it {made_by}); found {}: meshtrust adds its \
         role {AGENT_ROLE} beside them and leaves the mount, {config} and those roles as they are. Removing \
         {} from the mesh file removes only {AGENT_ROLE}.",
        cluster.name,
        roles_text(auth.other_roles.as_ref()),
        cluster.name
    )
}

/// Without a config the mount reviews no token, so the agent's login fails until its owner configures it.
pub fn unconfigured_foreign_mount_warning(cluster: &ClusterSettings) -> String {
    format!(
        "auth/{} (cluster {}) is not meshtrust's and has no config: OpenBao cannot review {}'s tokens, so its \
         agent cannot log in until the mount's owner configures it (`bao write auth/{}/config \
         kubernetes_host=...`), or set clusters[].authMount to a free path for a mount of meshtrust's own",
        cluster.auth_mount, cluster.name, cluster.name, cluster.auth_mount
    )
}

fn change(op: Op, resource: String, summary: String, reason: String, action: Action) -> Change {
    Change {
        target: Target::OpenBao,
        op,
        resource,
        summary,
        reason,
        action,
    }
}

/// A departed cluster's OpenBao access goes: the whole mount when meshtrust made it and holds nothing else,
/// else only meshtrust's role (and `plan` says what it leaves).
pub fn plan_departed_mount(mount: &str, departed: &DepartedAuth, plan: &mut Plan) {
    let cluster = &departed.cluster;
    let reason =
        format!("{cluster} is no longer in the mesh file; its agent must not log in any more");
    if departed.mount_may_go() {
        plan.changes.push(change(
            Op::Delete,
            format!("auth/{mount}"),
            "the Kubernetes auth mount meshtrust made, and its agent role".into(),
            reason,
            Action::DisableAuthMount {
                cluster: cluster.clone(),
                mount: mount.to_string(),
            },
        ));
        return;
    }
    if departed.agent_role {
        plan.changes.push(change(
            Op::Delete,
            format!("auth/{mount}/role/{AGENT_ROLE}"),
            "meshtrust's agent role only".into(),
            reason,
            Action::DeleteAgentRole {
                cluster: cluster.clone(),
                mount: mount.to_string(),
            },
        ));
    }
    let whose = if departed.made_by_meshtrust {
        "meshtrust made it, but it now holds"
    } else {
        "it is not meshtrust's and holds"
    };
    plan.notes.push(format!(
        "auth/{mount} (cluster {cluster}) stays: {whose} {}",
        roles_text(departed.other_roles.as_ref())
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn departed(made: bool, others: Option<Vec<&str>>) -> DepartedAuth {
        DepartedAuth {
            cluster: "cluster-c".into(),
            made_by_meshtrust: made,
            agent_role: true,
            other_roles: others.map(|o| o.into_iter().map(String::from).collect()),
        }
    }

    fn actions(d: &DepartedAuth) -> (Vec<Action>, Vec<String>) {
        let mut plan = Plan::default();
        plan_departed_mount("kubernetes_cluster_c", d, &mut plan);
        (
            plan.changes.into_iter().map(|c| c.action).collect(),
            plan.notes,
        )
    }

    #[test]
    fn only_an_empty_mount_meshtrust_made_is_disabled() {
        let (a, notes) = actions(&departed(true, Some(vec![])));
        assert!(matches!(a[..], [Action::DisableAuthMount { .. }]), "{a:?}");
        assert!(notes.is_empty());
    }

    #[test]
    fn another_tools_role_keeps_the_mount_and_loses_only_meshtrusts_role() {
        for d in [
            departed(true, Some(vec!["vault-secrets-operator"])),
            departed(false, Some(vec![])),
            departed(true, None),
        ] {
            let (a, notes) = actions(&d);
            assert!(
                matches!(a[..], [Action::DeleteAgentRole { .. }]),
                "{d:?}: {a:?}"
            );
            assert!(notes[0].contains("stays"), "{notes:?}");
        }
        let (_, notes) = actions(&departed(true, Some(vec!["vault-secrets-operator"])));
        assert!(notes[0].contains("vault-secrets-operator"), "{notes:?}");
    }

    #[test]
    fn a_mount_without_meshtrusts_description_is_not_meshtrusts() {
        let mut auth = AuthFacts {
            kind: Some("kubernetes".into()),
            ..Default::default()
        };
        assert!(!made_by_meshtrust(&auth));
        auth.description = "team login".into();
        assert!(!made_by_meshtrust(&auth));
        auth.description = crate::names::auth_mount_description("cluster-a");
        assert!(made_by_meshtrust(&auth));
    }
}

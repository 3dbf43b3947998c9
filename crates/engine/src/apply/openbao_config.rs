//! Applying OpenBao's configuration: the namespace, the KV mount, one Kubernetes auth mount per cluster with
//! its config and agent role, and meshtrust's policies. Creations tolerate a concurrent run that made the same
//! thing a moment ago.

use meshtrust_core::bao_plan::{AGENT_ROLE, desired_host, desired_role, policy_roots};
use meshtrust_core::names::auth_mount_description;
use meshtrust_core::plan::Action;
use meshtrust_core::policy::{ADMIN_POLICY, admin_policy, agent_policy, agent_policy_name};
use meshtrust_core::ports::{ErrorKind, KubernetesAuthConfig, PortError, System};

use super::Targets;
use crate::EngineError;
use crate::snapshot::Snapshot;

pub(super) async fn apply(
    targets: &Targets<'_>,
    snapshot: &Snapshot,
    action: &Action,
) -> Result<String, EngineError> {
    let bao = targets.bao;
    match action {
        Action::CreateBaoNamespace { namespace } => {
            if let Err(e) = bao.create_namespace(namespace).await
                && !bao.namespace_exists(namespace).await?
            {
                return Err(e.into());
            }
            Ok(format!("created OpenBao namespace {namespace}"))
        }
        Action::EnableKvMount { mount } => {
            if let Err(e) = bao.enable_mount(mount, "kv", None).await
                && bao.mount(mount).await?.is_none_or(|m| m.kind != "kv")
            {
                return Err(e.into());
            }
            Ok(format!("mounted KV v2 at {mount}/"))
        }
        Action::DisableAuthMount { cluster, mount } => {
            disable_auth_mount(targets, cluster, mount).await
        }
        Action::DeleteAgentRole { cluster, mount } => {
            bao.delete_kubernetes_auth_role(mount, AGENT_ROLE).await?;
            Ok(format!(
                "deleted role {AGENT_ROLE} from auth/{mount}/ (the mount stays): {cluster}'s agent can no longer log in"
            ))
        }
        Action::DeletePolicy { name } => {
            bao.delete_policy(name).await?;
            Ok(format!("deleted policy {name}"))
        }
        Action::EnableAuthMount { cluster, mount } => {
            if let Err(e) = bao
                .enable_auth(mount, "kubernetes", &auth_mount_description(cluster))
                .await
                && bao.auth_mount(mount).await?.as_deref() != Some("kubernetes")
            {
                return Err(e.into());
            }
            Ok(format!("enabled Kubernetes auth at auth/{mount}/"))
        }
        Action::ConfigureAuth { cluster, mount } => {
            configure_auth(targets, snapshot, cluster, mount).await
        }
        Action::WriteAgentRole { cluster, mount } => {
            let role = desired_role(targets.mesh, targets.settings(cluster)?);
            bao.write_kubernetes_auth_role(mount, AGENT_ROLE, &role)
                .await?;
            Ok(format!(
                "role {AGENT_ROLE} grants {}",
                role.policies.join(", ")
            ))
        }
        Action::WritePolicy { name } => {
            let roots = policy_roots(targets.mesh, &snapshot.facts().openbao.roots);
            bao.write_policy(name, &policy_text(targets, name, &roots)?)
                .await?;
            Ok(format!("wrote policy {name}"))
        }
        other => Err(EngineError::Inconsistent(format!(
            "{other:?} is not an OpenBao configuration change"
        ))),
    }
}

/// Unmounts a departed cluster's auth mount meshtrust made, unless another tool added a role since the plan was
/// made: that is a lost race, and the next plan removes only meshtrust's role.
async fn disable_auth_mount(
    targets: &Targets<'_>,
    cluster: &str,
    mount: &str,
) -> Result<String, EngineError> {
    let roles = targets.bao.kubernetes_auth_roles(mount).await?;
    let others: Vec<&String> = roles.iter().filter(|r| *r != AGENT_ROLE).collect();
    if !others.is_empty() {
        return Err(PortError::new(
            System::OpenBao,
            ErrorKind::Conflict,
            format!("DELETE sys/auth/{mount}"),
            format!("role(s) {others:?} appeared in the mount since the plan; it stays"),
        )
        .into());
    }
    targets.bao.disable_auth(mount).await?;
    Ok(format!(
        "disabled auth/{mount}/: {cluster}'s agent can no longer log in"
    ))
}

async fn configure_auth(
    targets: &Targets<'_>,
    snapshot: &Snapshot,
    cluster: &str,
    mount: &str,
) -> Result<String, EngineError> {
    let settings = targets.settings(cluster)?;
    let api = snapshot
        .facts
        .clusters
        .get(cluster)
        .map(|c| c.api.clone())
        .unwrap_or_default();
    let host = desired_host(settings, &api.server);
    let ca = api.ca_pem.ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "cluster {cluster}: its kubeconfig has no certificate-authority-data, so OpenBao cannot verify the API server; add it to the kubeconfig"
        ))
    })?;
    let config = KubernetesAuthConfig {
        kubernetes_host: host.clone(),
        kubernetes_ca_cert: ca,
    };
    targets
        .bao
        .write_kubernetes_auth_config(mount, &config)
        .await?;
    Ok(format!("auth/{mount} reviews tokens at {host}"))
}

fn policy_text(targets: &Targets<'_>, name: &str, roots: &[u32]) -> Result<String, EngineError> {
    if name == ADMIN_POLICY {
        return Ok(admin_policy(targets.mesh, roots));
    }
    let cluster = targets
        .mesh
        .clusters
        .iter()
        .find(|c| agent_policy_name(&c.name) == name)
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "policy {name} belongs to no cluster of the mesh file"
            ))
        })?;
    Ok(agent_policy(targets.mesh, cluster, roots))
}

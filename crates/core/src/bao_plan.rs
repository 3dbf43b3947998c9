//! Planning OpenBao's side of the mesh: the namespace, the KV mount, one Kubernetes auth mount per cluster
//! with its config and the agent's role, and meshtrust's policies. Anything edited by hand shows up as drift.

use crate::auth_ownership::{
    foreign_mount_note, made_by_meshtrust, plan_departed_mount, unconfigured_foreign_mount_warning,
};
use crate::facts::{
    AuthFacts, BaoConfigFacts, ClusterFacts, MountFacts, Observed, RoleFacts, RootIssuerFacts,
};
use crate::mesh::{CaMode, ClusterSettings, Mesh};
use crate::plan::{Action, Blocker, Change, Domain, Op, Plan, Target};
use crate::policy::{ADMIN_POLICY, admin_policy, agent_policy, agent_policy_name};

pub const AGENT_ROLE: &str = "meshtrust-agent";

/// The root generations the policies let sign intermediates: every meshtrust root OpenBao holds, or, before
/// the first apply, generation 1 (which that apply creates). A root made later (`ca rotate-root`) is observed
/// by the next run, which rewrites the policies before anything signs with it. Plan and apply both derive it
/// from the same observation, so they agree.
pub fn policy_roots(mesh: &Mesh, observed: &[RootIssuerFacts]) -> Vec<u32> {
    if mesh.ca.mode != CaMode::BaoPki {
        return vec![];
    }
    let roots: Vec<u32> = observed.iter().map(|r| r.generation).collect();
    if roots.is_empty() { vec![1] } else { roots }
}

/// The role the agent of `cluster` logs in with.
pub fn desired_role(mesh: &Mesh, cluster: &ClusterSettings) -> RoleFacts {
    RoleFacts {
        service_account_names: vec![mesh.agent.service_account.clone()],
        service_account_namespaces: vec![mesh.agent.namespace.clone()],
        policies: vec![agent_policy_name(&cluster.name)],
        token_ttl: mesh.agent.token_ttl.seconds(),
    }
}

/// The API address OpenBao uses for TokenReview: the peers' address from the mesh file, else the kubeconfig's.
pub fn desired_host(cluster: &ClusterSettings, observed_server: &str) -> String {
    cluster
        .api_server
        .clone()
        .unwrap_or_else(|| observed_server.to_string())
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

pub fn plan_openbao(mesh: &Mesh, observed: &Observed, plan: &mut Plan) {
    let config = &observed.openbao.config;
    plan_namespace_and_kv(mesh, config, plan);
    // Before the admin policy is rewritten: the one in force still grants the departed mounts.
    plan_departed(mesh, config, plan);
    let roots = policy_roots(mesh, &observed.openbao.roots);
    // Before the auth changes: an admin token holding only this policy needs its rules for a new cluster's
    // mount (and for marking an older release's mounts) before it can touch them.
    plan_policy(ADMIN_POLICY, &admin_policy(mesh, &roots), config, plan);
    for cluster in &mesh.clusters {
        plan_auth(mesh, observed, cluster, plan);
    }
    for cluster in &mesh.clusters {
        let text = agent_policy(mesh, cluster, &roots);
        plan_policy(&agent_policy_name(&cluster.name), &text, config, plan);
    }
}

fn plan_namespace_and_kv(mesh: &Mesh, config: &BaoConfigFacts, plan: &mut Plan) {
    if let (Some(ns), Some(false)) = (&mesh.openbao.namespace, config.namespace_exists) {
        plan.changes.push(change(
            Op::Create,
            format!("namespace {ns}"),
            "every meshtrust mount, role and policy lives in it".into(),
            "it does not exist".into(),
            Action::CreateBaoNamespace {
                namespace: ns.clone(),
            },
        ));
    }
    let kv = &mesh.openbao.kv_mount;
    match &config.kv_mount {
        None | Some(MountFacts::Absent) => plan.changes.push(change(
            Op::Create,
            format!("KV mount {kv}"),
            "KV version 2".into(),
            "remote secrets and the change index are published there".into(),
            Action::EnableKvMount { mount: kv.clone() },
        )),
        Some(MountFacts::Present { kind, .. }) if kind != "kv" => plan.blockers.push(Blocker {
            domain: Domain::OpenBaoConfig,
            target: Target::OpenBao,
            resource: format!("mount {kv}"),
            reason: format!("is a {kind:?} mount, not kv"),
            fix: "set openbao.kvMount to a KV v2 mount or a free path".into(),
        }),
        Some(MountFacts::Present { .. }) => {}
    }
}

/// One cluster's Kubernetes auth mount, its TokenReview config and the agent's role.
fn plan_auth(mesh: &Mesh, observed: &Observed, cluster: &ClusterSettings, plan: &mut Plan) {
    let config = &observed.openbao.config;
    let mount = &cluster.auth_mount;
    let empty = AuthFacts::default();
    let auth = config.auth.get(&cluster.name).unwrap_or(&empty);
    match auth.kind.as_deref() {
        None => plan.changes.push(change(
            Op::Create,
            format!("auth mount auth/{mount}"),
            format!("Kubernetes auth for cluster {}", cluster.name),
            "it does not exist".into(),
            Action::EnableAuthMount {
                cluster: cluster.name.clone(),
                mount: mount.clone(),
            },
        )),
        Some("kubernetes") if !made_by_meshtrust(auth) => {
            // Another tool's mount (seed 000's, shared with VSO and cert-manager): only meshtrust's role is
            // added; the mount and its config stay theirs.
            plan.notes.push(foreign_mount_note(cluster, auth));
            if auth.kubernetes_host.is_none() {
                plan.warnings
                    .push(unconfigured_foreign_mount_warning(cluster));
            }
            plan_role(mesh, cluster, auth, desired_role(mesh, cluster), plan);
            return;
        }
        Some("kubernetes") => {}
        Some(other) => {
            plan.blockers.push(Blocker {
                domain: Domain::OpenBaoConfig,
                target: Target::OpenBao,
                resource: format!("auth mount auth/{mount}"),
                reason: format!("is a {other:?} auth method, not kubernetes"),
                fix: format!(
                    "set clusters[].authMount for {} to a free path",
                    cluster.name
                ),
            });
            return;
        }
    }
    let role = desired_role(mesh, cluster);
    let Some(cluster_facts) = observed.clusters.get(&cluster.name) else {
        // Not connected: its API address and CA are unknown, so only the role can be planned.
        plan_role(mesh, cluster, auth, role, plan);
        return;
    };
    plan_auth_config(cluster, auth, cluster_facts, plan);
    plan_role(mesh, cluster, auth, role, plan);
}

/// `auth/<mount>/config`: TokenReview against the cluster's API with its CA.
fn plan_auth_config(
    cluster: &ClusterSettings,
    auth: &AuthFacts,
    cluster_facts: &ClusterFacts,
    plan: &mut Plan,
) {
    let mount = &cluster.auth_mount;
    let server = cluster_facts.api.server.as_str();
    let host = desired_host(cluster, server);
    let ca = cluster_facts.api.ca_pem.as_deref();
    let same_ca = match (ca, auth.kubernetes_ca_cert.as_deref()) {
        (Some(want), Some(have)) => want.trim() == have.trim(),
        (None, _) => true,
        (Some(_), None) => false,
    };
    if auth.kubernetes_host.as_deref() != Some(host.as_str()) || !same_ca {
        let reason = match &auth.kubernetes_host {
            None => "the mount is not configured yet".to_string(),
            Some(h) if h != &host => {
                format!("kubernetes_host is {h}, the mesh file says {host} (drift)")
            }
            Some(_) => "kubernetes_ca_cert differs from the cluster's CA (drift)".to_string(),
        };
        plan.changes.push(change(
            if auth.kubernetes_host.is_none() {
                Op::Create
            } else {
                Op::Update
            },
            format!("auth/{mount}/config"),
            format!("TokenReview against {host}"),
            reason,
            Action::ConfigureAuth {
                cluster: cluster.name.clone(),
                mount: mount.clone(),
            },
        ));
    }
}

fn plan_policy(name: &str, text: &str, config: &BaoConfigFacts, plan: &mut Plan) {
    let have = config.policies.get(name).cloned().flatten();
    if have.as_deref().map(str::trim) == Some(text.trim()) {
        return;
    }
    let (op, reason) = match have {
        None => (Op::Create, "it does not exist"),
        Some(_) => (
            Op::Update,
            "its text differs from what the mesh file calls for (drift, or the mesh file changed)",
        ),
    };
    plan.changes.push(change(
        op,
        format!("policy {name}"),
        "least privilege, see `meshtrust bao policies`".into(),
        reason.into(),
        Action::WritePolicy {
            name: name.to_string(),
        },
    ));
}

fn plan_role(
    mesh: &Mesh,
    cluster: &ClusterSettings,
    auth: &AuthFacts,
    role: RoleFacts,
    plan: &mut Plan,
) {
    let mount = &cluster.auth_mount;
    if auth.role.as_ref() == Some(&role) {
        return;
    }
    plan.changes.push(change(
        if auth.role.is_none() {
            Op::Create
        } else {
            Op::Update
        },
        format!("auth/{mount}/role/{AGENT_ROLE}"),
        format!(
            "ServiceAccount {}/{} gets policy {} for {}s",
            mesh.agent.namespace, mesh.agent.service_account, role.policies[0], role.token_ttl
        ),
        if auth.role.is_none() {
            "it does not exist".into()
        } else {
            "the role was changed outside meshtrust (drift)".into()
        },
        Action::WriteAgentRole {
            cluster: cluster.name.clone(),
            mount: mount.clone(),
        },
    ));
}

/// A cluster that left the mesh file loses its OpenBao access: the auth mount meshtrust made for it (or only its
/// agent role, from a mount that is not meshtrust's alone) and its agent policy.
fn plan_departed(mesh: &Mesh, config: &BaoConfigFacts, plan: &mut Plan) {
    for (mount, departed) in &config.departed_auth {
        plan_departed_mount(mount, departed, plan);
    }
    for name in &config.departed_policies {
        plan.changes.push(change(
            Op::Delete,
            format!("policy {name}"),
            "the agent policy".into(),
            format!(
                "its cluster is no longer in the mesh file (mesh {})",
                mesh.mesh_id
            ),
            Action::DeletePolicy { name: name.clone() },
        ));
    }
}

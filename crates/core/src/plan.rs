//! A plan: named, explainable changes, in the order they must run. `meshtrust plan` prints it like
//! `terraform plan`; `--output json` gives the same to machines.

use std::fmt;

use serde::Serialize;

use crate::duration::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    fn symbol(self) -> char {
        match self {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Target {
    OpenBao,
    Cluster { name: String },
}

/// What to do. Roots are named by generation (`meshtrust-root-<n>`) so that a change can refer to a root that
/// an earlier change in the same plan creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Action {
    CreateBaoNamespace {
        namespace: String,
    },
    EnableKvMount {
        mount: String,
    },
    EnableAuthMount {
        cluster: String,
        mount: String,
    },
    /// A departed cluster's auth mount goes, with its role: its agent can no longer log in. Only a mount
    /// meshtrust made that holds no other tool's role.
    DisableAuthMount {
        cluster: String,
        mount: String,
    },
    /// A departed cluster's agent role goes from a mount meshtrust keeps (another tool's, or one holding
    /// other tools' roles).
    DeleteAgentRole {
        cluster: String,
        mount: String,
    },
    /// A departed cluster's agent policy goes.
    DeletePolicy {
        name: String,
    },
    /// Point the cluster's auth mount at its API server and CA (values come from the observation).
    ConfigureAuth {
        cluster: String,
        mount: String,
    },
    WriteAgentRole {
        cluster: String,
        mount: String,
    },
    WritePolicy {
        name: String,
    },
    EnablePkiMount {
        mount: String,
        max_lease_ttl: Span,
    },
    TunePkiMount {
        mount: String,
        max_lease_ttl: Span,
    },
    GenerateRoot {
        mount: String,
        generation: u32,
    },
    CreateSharedRoot {
        kv_path: String,
    },
    /// `ca.importRoot.kvPath`: import the KV bundle (certificate and key) into the PKI mount as
    /// `meshtrust-root-1`.
    ImportRoot {
        mount: String,
        kv_path: String,
    },
    /// Destroy every version and the metadata of the KV bundle a root was imported from, once no cluster
    /// trusts that root any more.
    DestroyImportedKey {
        kv_path: String,
    },
    CreateNamespace {
        cluster: String,
        namespace: String,
    },
    /// New key and intermediate signed by root `signing`; `root-cert.pem` holds the `trust` roots.
    IssueIntermediate {
        cluster: String,
        signing: u32,
        trust: Vec<u32>,
        /// Fingerprints of roots OpenBao does not hold that the new `root-cert.pem` keeps from the old one.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        keep: Vec<String>,
        adopt: bool,
    },
    /// Keep the intermediate, rewrite `root-cert.pem` to hold exactly the `trust` roots, plus the `keep`
    /// roots (held by no OpenBao issuer) taken from the bundle itself.
    UpdateTrustBundle {
        cluster: String,
        trust: Vec<u32>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        keep: Vec<String>,
    },
    /// shared-root mode: the cluster's CA is the shared root itself.
    WriteSharedRoot {
        cluster: String,
        adopt: bool,
    },
    /// Create or update the reader ServiceAccount, ClusterRole and binding peers use.
    EnsureReader {
        cluster: String,
    },
    /// Mint a reader token, build the kubeconfig, publish it to KV (check-and-set) and bump the index.
    PublishRemoteSecret {
        cluster: String,
    },
    /// Write `istio-remote-secret-<peer>` into `cluster` from the peer's KV entry.
    SyncRemoteSecret {
        cluster: String,
        peer: String,
    },
    DeleteRemoteSecret {
        cluster: String,
        peer: String,
    },
    /// Write the cluster's own trust facts to `<kv>/istio/meshtrust-trust/<cluster>` (check-and-set), so
    /// peers' agents see where it stands in a root rotation. Only the cluster's agent may.
    PublishTrustFacts {
        cluster: String,
        facts: crate::trust_facts::TrustFacts,
    },
    /// Delete istioctl's long-lived reader token Secret once every peer uses meshtrust's bound token.
    DeleteLegacyReaderToken {
        cluster: String,
    },
    /// Remove a cluster that left the mesh from the index and KV.
    UnpublishRemoteSecret {
        cluster: String,
    },
}

/// Which applier carries out an action; mirrors the planners (`bao_plan`, `planner`, `remote_plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Domain {
    /// OpenBao's namespace, mounts, Kubernetes auth and policies.
    OpenBaoConfig,
    /// Roots, intermediates and every cluster's `cacerts`.
    Trust,
    /// Reader identities, published kubeconfigs and `istio-remote-secret-*`.
    RemoteSecrets,
}

impl Action {
    pub fn domain(&self) -> Domain {
        match self {
            Action::CreateBaoNamespace { .. }
            | Action::EnableKvMount { .. }
            | Action::EnableAuthMount { .. }
            | Action::DisableAuthMount { .. }
            | Action::DeleteAgentRole { .. }
            | Action::DeletePolicy { .. }
            | Action::ConfigureAuth { .. }
            | Action::WriteAgentRole { .. }
            | Action::WritePolicy { .. } => Domain::OpenBaoConfig,
            Action::EnablePkiMount { .. }
            | Action::TunePkiMount { .. }
            | Action::GenerateRoot { .. }
            | Action::CreateSharedRoot { .. }
            | Action::ImportRoot { .. }
            | Action::DestroyImportedKey { .. }
            | Action::CreateNamespace { .. }
            | Action::IssueIntermediate { .. }
            | Action::UpdateTrustBundle { .. }
            | Action::WriteSharedRoot { .. }
            | Action::PublishTrustFacts { .. } => Domain::Trust,
            Action::EnsureReader { .. }
            | Action::PublishRemoteSecret { .. }
            | Action::SyncRemoteSecret { .. }
            | Action::DeleteRemoteSecret { .. }
            | Action::DeleteLegacyReaderToken { .. }
            | Action::UnpublishRemoteSecret { .. } => Domain::RemoteSecrets,
        }
    }

    /// Changes that write cluster-scoped objects: the reader identity's ClusterRole and binding (RBAC) and the
    /// Istio namespace. Only the admin (`meshtrust apply`) or the deploy files make them: an agent that could
    /// write RBAC could grant itself anything. The agent's own Role lives in the Istio namespace, so that
    /// namespace exists wherever an agent has any rights at all.
    pub fn needs_cluster_admin(&self) -> bool {
        matches!(
            self,
            Action::EnsureReader { .. } | Action::CreateNamespace { .. }
        )
    }

    /// Changes only a cluster's own agent may make: its policy, not the admin's, may write its trust facts.
    pub fn agent_only(&self) -> bool {
        matches!(self, Action::PublishTrustFacts { .. })
    }

    /// Changes that need the admin's OpenBao rights: its configuration, the mesh-wide CA in OpenBao, and
    /// removing a departed cluster's entry. An agent never makes them; `apply --openbao-only` makes only them.
    pub fn needs_openbao_admin(&self) -> bool {
        // All of OpenBao's configuration, so that a new configuration action can never reach an agent.
        self.domain() == Domain::OpenBaoConfig
            || matches!(
                self,
                Action::EnablePkiMount { .. }
                    | Action::TunePkiMount { .. }
                    | Action::GenerateRoot { .. }
                    | Action::CreateSharedRoot { .. }
                    | Action::ImportRoot { .. }
                    | Action::DestroyImportedKey { .. }
                    | Action::UnpublishRemoteSecret { .. }
            )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub target: Target,
    pub op: Op,
    /// The object, as a person names it: `Secret istio-system/cacerts`, `PKI mount pki`.
    pub resource: String,
    pub summary: String,
    pub reason: String,
    pub action: Action,
}

/// A change that must not be made without the operator's say-so (for example, taking over a `cacerts` that
/// meshtrust does not manage). It fails `apply` until resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// The domain whose changes it holds back (`plan --only` leaves other domains' blockers out).
    pub domain: Domain,
    pub target: Target,
    pub resource: String,
    pub reason: String,
    pub fix: String,
}

/// How the planner is asked to plan (the planner and the rotation planning both read it).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Take over a `cacerts` or remote secret that meshtrust does not manage, in place.
    pub adopt: bool,
    /// Plan only this domain (and OpenBao's configuration): `--only ca` / `--only remote-secrets`.
    pub only: Option<Domain>,
    /// Drop older roots as soon as every cluster signs with the newest, without `ca.rootRotation.phaseDwell`:
    /// `ca rotate-root`, where the operator paces the phases.
    pub skip_dwell: bool,
    /// Plan only what needs the admin's OpenBao rights (`apply --openbao-only`): nothing inside the clusters,
    /// so a 1,000-cluster mesh does not plan a million remote secrets only to drop them.
    pub openbao_only: bool,
    /// Destroy the KV bundle a root was imported from once no cluster trusts that root (`apply
    /// --destroy-imported-key`); planned only then, never earlier.
    pub destroy_imported_key: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub blockers: Vec<Blocker>,
    pub warnings: Vec<String>,
    /// What meshtrust found and leaves as it is (another tool's auth mount and roles): said, not changed.
    pub notes: Vec<String>,
}

impl Plan {
    /// Keeps only `domain`'s changes and blockers, and what every domain builds on (OpenBao's configuration,
    /// the Istio namespace): `plan --only`/`apply --only`, so that a migration can move one domain while
    /// another waits for a hand-over.
    pub fn restrict_to(&mut self, domain: Domain) {
        let keep = |d: Domain| d == domain || d == Domain::OpenBaoConfig;
        self.changes.retain(|c| {
            keep(c.action.domain()) || matches!(c.action, Action::CreateNamespace { .. })
        });
        self.blockers.retain(|b| keep(b.domain));
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.blockers.is_empty()
    }

    fn count(&self, op: Op) -> usize {
        self.changes.iter().filter(|c| c.op == op).count()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::OpenBao => f.write_str("OpenBao"),
            Target::Cluster { name } => write!(f, "cluster {name}"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  {} {}: {}\n      because {}",
            self.op.symbol(),
            self.resource,
            self.summary,
            self.reason
        )
    }
}

impl fmt::Display for Plan {
    /// Groups changes by target in first-seen order, like `terraform plan`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "WARNING: {w}")?;
        }
        for n in &self.notes {
            writeln!(f, "NOTE: {n}")?;
        }
        if self.is_empty() {
            return writeln!(
                f,
                "No changes. OpenBao and every cluster match the mesh file."
            );
        }
        let mut targets: Vec<&Target> = Vec::new();
        for c in &self.changes {
            if !targets.contains(&&c.target) {
                targets.push(&c.target);
            }
        }
        for t in targets {
            writeln!(f, "{t}")?;
            for c in self.changes.iter().filter(|c| &c.target == t) {
                writeln!(f, "{c}")?;
            }
        }
        for b in &self.blockers {
            writeln!(
                f,
                "BLOCKED {} {}: {}\n      fix: {}",
                b.target, b.resource, b.reason, b.fix
            )?;
        }
        writeln!(
            f,
            "Plan: {} to create, {} to update, {} to delete{}.",
            self.count(Op::Create),
            self.count(Op::Update),
            self.count(Op::Delete),
            if self.blockers.is_empty() {
                String::new()
            } else {
                format!(", {} blocked", self.blockers.len())
            }
        )
    }
}

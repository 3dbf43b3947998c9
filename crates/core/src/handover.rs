//! Secrets another controller writes. External Secrets Operator, the Vault Secrets Operator and cert-manager
//! rewrite their target Secret on every refresh, so meshtrust writing the same Secret would make the two fight.
//! A Secret meshtrust would write that such a controller still owns blocks the plan with a sentence naming the
//! controller's object and how to hand the Secret over; marks a controller left behind after its object is gone
//! are only reported.

use serde::Serialize;

use crate::facts::Observed;
use crate::mesh::Mesh;
use crate::names::{CACERTS, remote_secret_name};
use crate::plan::{Action, Blocker, Domain, Plan, Target};
use crate::ports::SecretObject;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Controller {
    ExternalSecrets,
    VaultSecretsOperator,
    CertManager,
}

impl Controller {
    pub fn product(self) -> &'static str {
        match self {
            Controller::ExternalSecrets => "External Secrets Operator",
            Controller::VaultSecretsOperator => "Vault Secrets Operator",
            Controller::CertManager => "cert-manager",
        }
    }

    /// The kind of the object that tells the controller to write the Secret.
    pub fn kind(self) -> &'static str {
        match self {
            Controller::ExternalSecrets => "ExternalSecret",
            Controller::VaultSecretsOperator => "VaultStaticSecret",
            Controller::CertManager => "Certificate",
        }
    }

    /// `kubectl` resource name of that kind.
    fn resource(self) -> &'static str {
        match self {
            Controller::ExternalSecrets => "externalsecret",
            Controller::VaultSecretsOperator => "vaultstaticsecret",
            Controller::CertManager => "certificate",
        }
    }

    /// The labels and annotations the controller leaves on a Secret it writes, to strip once it is handed over.
    pub fn marks(self) -> &'static [&'static str] {
        match self {
            Controller::ExternalSecrets => &[
                "reconcile.external-secrets.io/managed",
                "reconcile.external-secrets.io/created-by",
                "reconcile.external-secrets.io/data-hash",
            ],
            Controller::VaultSecretsOperator => &[
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/component",
                "app.kubernetes.io/name",
                "secrets.hashicorp.com/vso-ownerRefUID",
            ],
            Controller::CertManager => &[
                "controller.cert-manager.io/fao",
                "cert-manager.io/certificate-name",
                "cert-manager.io/issuer-name",
                "cert-manager.io/issuer-kind",
                "cert-manager.io/issuer-group",
                "cert-manager.io/common-name",
                "cert-manager.io/alt-names",
                "cert-manager.io/ip-sans",
                "cert-manager.io/uri-sans",
            ],
        }
    }
}

/// Whether the controller's object still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimState {
    /// It exists: the controller keeps rewriting the Secret.
    Live,
    /// It is gone: only its marks are left.
    Gone,
    /// It could not be read (no right to, or it could not be named): treated as live.
    Unknown,
}

/// Another controller's claim on a Secret meshtrust would write, from the Secret's ownerReferences, labels and
/// annotations, and a look at the controller's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignClaim {
    pub controller: Controller,
    /// The controller's object, when it could be named.
    pub object: Option<String>,
    /// It holds an ownerReference to that object: deleting the object deletes the Secret (garbage collection)
    /// unless the deletion orphans it.
    pub owner_reference: bool,
    pub state: ClaimState,
}

impl ForeignClaim {
    /// The sentence saying whose the Secret is.
    fn reason(&self, namespace: &str) -> String {
        let object = match &self.object {
            Some(name) => format!("{} {namespace}/{name}", self.controller.kind()),
            None => format!("an unnamed {}", self.controller.kind()),
        };
        match self.state {
            ClaimState::Live => format!(
                "is written by {} ({object} targets it); meshtrust writing it too would make the two overwrite each other",
                self.controller.product()
            ),
            ClaimState::Unknown => format!(
                "carries {}'s marks ({object}) and meshtrust could not see whether that object still exists; it never writes a Secret another controller may own",
                self.controller.product()
            ),
            ClaimState::Gone => format!(
                "carries marks {} left behind ({object} is gone)",
                self.controller.product()
            ),
        }
    }

    /// How to hand the Secret over to meshtrust, as commands.
    fn fix(&self, namespace: &str, secret: &str) -> String {
        let delete = match &self.object {
            Some(name) => {
                let orphan = if self.owner_reference || self.controller != Controller::CertManager {
                    // Its ownerReference would have the garbage collector delete the Secret with it: istiod
                    // would lose its CA or a peer until meshtrust writes it again.
                    " --cascade=orphan"
                } else {
                    ""
                };
                format!(
                    "kubectl -n {namespace} delete {} {name}{orphan}",
                    self.controller.resource()
                )
            }
            None => format!(
                "find the {} whose target is {secret} (kubectl -n {namespace} get {}) and delete it with --cascade=orphan",
                self.controller.kind(),
                self.controller.resource()
            ),
        };
        format!(
            "hand it over: {delete} (the Secret stays as it is, so istiod keeps working), then run \
             `meshtrust apply --adopt`: it takes {secret} over in place and removes the labels, annotations and \
             ownerReferences {} left on it",
            self.controller.product()
        )
    }
}

/// The controller whose marks `secret` carries, the object its marks name (if any), and whether that is an
/// ownerReference. meshtrust's own `managed-by` label is no mark.
pub fn claimed_by(secret: &SecretObject) -> Option<(Controller, Option<String>, bool)> {
    let owned_by = |group: &str, kinds: &[&str]| {
        secret.owner_references.iter().find(|o| {
            o.api_version.split('/').next() == Some(group) && kinds.contains(&o.kind.as_str())
        })
    };
    if let Some(o) = owned_by("external-secrets.io", &["ExternalSecret"]) {
        return Some((Controller::ExternalSecrets, Some(o.name.clone()), true));
    }
    let vso_kinds = ["VaultStaticSecret", "VaultDynamicSecret", "VaultPKISecret"];
    if let Some(o) = owned_by("secrets.hashicorp.com", &vso_kinds) {
        return Some((Controller::VaultSecretsOperator, Some(o.name.clone()), true));
    }
    if let Some(o) = owned_by("cert-manager.io", &["Certificate"]) {
        return Some((Controller::CertManager, Some(o.name.clone()), true));
    }
    if let Some(name) = secret.annotations.get("cert-manager.io/certificate-name") {
        return Some((Controller::CertManager, Some(name.clone()), false));
    }
    let label = |k: &str| secret.labels.get(k).map(String::as_str);
    if label("reconcile.external-secrets.io/managed").is_some()
        || label("reconcile.external-secrets.io/created-by").is_some()
        || secret
            .annotations
            .contains_key("reconcile.external-secrets.io/data-hash")
    {
        return Some((Controller::ExternalSecrets, None, false));
    }
    if label("app.kubernetes.io/managed-by") == Some("hashicorp-vso")
        || label("secrets.hashicorp.com/vso-ownerRefUID").is_some()
    {
        return Some((Controller::VaultSecretsOperator, None, false));
    }
    None
}

/// Removes the marks (labels, annotations, ownerReferences) of every controller `secret` carries: what a
/// write after the handover does, so that the Secret no longer reads as theirs. Generic labels go only with
/// the value that controller gives them.
pub fn strip_marks(secret: &mut SecretObject) {
    secret.owner_references.retain(|o| {
        let group = o.api_version.split('/').next().unwrap_or_default();
        !matches!(
            group,
            "external-secrets.io" | "secrets.hashicorp.com" | "cert-manager.io"
        )
    });
    // Each round removes the marks that identified one controller: three rounds cover all of them.
    for _ in 0..3 {
        let Some((controller, _, _)) = claimed_by(secret) else {
            break;
        };
        for mark in controller.marks() {
            let value_bound = match *mark {
                "app.kubernetes.io/managed-by" => Some("hashicorp-vso"),
                "app.kubernetes.io/component" => Some("secret-sync"),
                "app.kubernetes.io/name" => Some("vault-secrets-operator"),
                _ => None,
            };
            let ours = |v: &String| value_bound.is_none_or(|want| v == want);
            if secret.labels.get(*mark).is_some_and(ours) {
                secret.labels.remove(*mark);
            }
            if secret.annotations.get(*mark).is_some_and(ours) {
                secret.annotations.remove(*mark);
            }
        }
    }
}

/// The Secret a change writes, in its cluster's Istio namespace.
fn written_secret(action: &Action) -> Option<(&str, String)> {
    match action {
        Action::IssueIntermediate { cluster, .. }
        | Action::UpdateTrustBundle { cluster, .. }
        | Action::WriteSharedRoot { cluster, .. } => Some((cluster, CACERTS.to_string())),
        Action::SyncRemoteSecret { cluster, peer }
        | Action::DeleteRemoteSecret { cluster, peer } => Some((cluster, remote_secret_name(peer))),
        _ => None,
    }
}

/// Turns every planned write to a Secret another controller still owns into a blocker naming that
/// controller's object, and replaces the generic "not managed by meshtrust" blocker of such a Secret with it.
/// Runs last, over the finished plan.
pub fn block_foreign_writes(mesh: &Mesh, observed: &Observed, plan: &mut Plan) {
    for cluster in &mesh.clusters {
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        let ns = &cluster.istio_namespace;
        for (secret, claim) in &facts.claims {
            let resource = format!("Secret {ns}/{secret}");
            let target = Target::Cluster {
                name: cluster.name.clone(),
            };
            let writes = |a: &Action| {
                written_secret(a).is_some_and(|(c, s)| c == cluster.name && &s == secret)
            };
            let planned = plan.changes.iter().any(|c| writes(&c.action));
            let blocked = plan
                .blockers
                .iter()
                .any(|b| b.target == target && b.resource == resource);
            if !planned && !blocked {
                continue;
            }
            if claim.state == ClaimState::Gone {
                plan.notes.push(format!(
                    "cluster {}: {resource} {}; meshtrust's write replaces them",
                    cluster.name,
                    claim.reason(ns)
                ));
                continue;
            }
            plan.changes.retain(|c| !writes(&c.action));
            plan.blockers
                .retain(|b| !(b.target == target && b.resource == resource));
            plan.blockers.push(Blocker {
                domain: if secret == CACERTS {
                    Domain::Trust
                } else {
                    Domain::RemoteSecrets
                },
                target,
                resource,
                reason: claim.reason(ns),
                fix: claim.fix(ns, secret),
            });
            block_publish_under_sync(secret, claim, plan);
        }
    }
}

/// ESO and VSO copy a remote secret from KV, maybe from the very entry meshtrust publishes the peer's kubeconfig
/// to (seed 000 keeps them at `kv/istio/remote-secrets/<cluster>`, meshtrust's default path). Publishing there in
/// meshtrust's layout while the controller still syncs would put meshtrust's extra fields into the Secret as
/// keys istiod takes for cluster IDs: the publish waits for the handover too.
fn block_publish_under_sync(secret: &str, claim: &ForeignClaim, plan: &mut Plan) {
    if claim.controller == Controller::CertManager {
        return;
    }
    let Some(peer) = crate::names::remote_secret_peer(secret) else {
        return;
    };
    let publishes =
        |a: &Action| matches!(a, Action::PublishRemoteSecret { cluster } if cluster == peer);
    let Some(change) = plan.changes.iter().find(|c| publishes(&c.action)) else {
        return;
    };
    plan.blockers.push(Blocker {
        domain: Domain::RemoteSecrets,
        target: Target::OpenBao,
        resource: change.resource.clone(),
        reason: format!(
            "{} still syncs {secret} from KV, maybe from this entry; publishing meshtrust's layout there now would reach istiod through it",
            claim.controller.product()
        ),
        fix: format!("hand {secret} over first (see its own blocker), then rerun"),
    });
    plan.changes.retain(|c| !publishes(&c.action));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::OwnerRef;

    fn claim(controller: Controller, state: ClaimState) -> ForeignClaim {
        ForeignClaim {
            controller,
            object: Some("istio-cacerts".into()),
            owner_reference: true,
            state,
        }
    }

    fn secret() -> SecretObject {
        SecretObject {
            namespace: "istio-system".into(),
            name: "cacerts".into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_controllers_marks_are_recognised() {
        let mut eso = secret();
        eso.owner_references.push(OwnerRef {
            api_version: "external-secrets.io/v1".into(),
            kind: "ExternalSecret".into(),
            name: "istio-cacerts".into(),
        });
        assert_eq!(
            claimed_by(&eso),
            Some((
                Controller::ExternalSecrets,
                Some("istio-cacerts".into()),
                true
            ))
        );
        let mut cm = secret();
        cm.annotations.insert(
            "cert-manager.io/certificate-name".into(),
            "istiod-ca".into(),
        );
        assert_eq!(
            claimed_by(&cm),
            Some((Controller::CertManager, Some("istiod-ca".into()), false))
        );
        let mut vso = secret();
        vso.labels.insert(
            "app.kubernetes.io/managed-by".into(),
            "hashicorp-vso".into(),
        );
        assert_eq!(
            claimed_by(&vso),
            Some((Controller::VaultSecretsOperator, None, false))
        );
        let mut ours = secret();
        ours.labels
            .insert("app.kubernetes.io/managed-by".into(), "meshtrust".into());
        assert_eq!(claimed_by(&ours), None);
    }

    #[test]
    fn a_write_after_the_handover_strips_every_controllers_marks_and_nothing_else() {
        let mut s = secret();
        s.labels.insert(
            "app.kubernetes.io/managed-by".into(),
            "hashicorp-vso".into(),
        );
        s.labels.insert(
            "app.kubernetes.io/name".into(),
            "vault-secrets-operator".into(),
        );
        s.labels.insert(
            "reconcile.external-secrets.io/managed".into(),
            "true".into(),
        );
        s.labels.insert("team".into(), "mesh".into());
        s.annotations.insert(
            "cert-manager.io/certificate-name".into(),
            "istiod-ca".into(),
        );
        s.owner_references.push(OwnerRef {
            api_version: "external-secrets.io/v1".into(),
            kind: "ExternalSecret".into(),
            name: "istio-cacerts".into(),
        });
        strip_marks(&mut s);
        assert_eq!(claimed_by(&s), None);
        assert!(s.owner_references.is_empty());
        assert_eq!(s.labels.keys().collect::<Vec<_>>(), ["team"]);
        assert!(s.annotations.is_empty());
        let mut user = secret();
        user.labels
            .insert("app.kubernetes.io/name".into(), "mine".into());
        strip_marks(&mut user);
        assert_eq!(user.labels["app.kubernetes.io/name"], "mine");
    }

    #[test]
    fn a_live_external_secret_is_named_with_its_orphaning_delete() {
        let c = claim(Controller::ExternalSecrets, ClaimState::Live);
        let reason = c.reason("istio-system");
        assert!(
            reason.contains("ExternalSecret istio-system/istio-cacerts targets it"),
            "{reason}"
        );
        let fix = c.fix("istio-system", "cacerts");
        assert!(
            fix.contains(
                "kubectl -n istio-system delete externalsecret istio-cacerts --cascade=orphan"
            ),
            "{fix}"
        );
        assert!(fix.contains("meshtrust apply --adopt"), "{fix}");
    }

    #[test]
    fn cert_manager_without_an_owner_reference_needs_no_orphaning() {
        let mut c = claim(Controller::CertManager, ClaimState::Live);
        c.owner_reference = false;
        let fix = c.fix("istio-system", "cacerts");
        assert!(
            fix.contains("delete certificate istio-cacerts (the Secret stays"),
            "{fix}"
        );
    }
}

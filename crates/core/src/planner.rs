//! The planning core: (mesh file, observed facts) → plan. Pure: no IO and no clock (the observation carries
//! the time it was taken), so every branch is tested here without servers.
//!
//! Root rotation is derived from what is observed (see [`crate::rotation`]), so it survives crashes and
//! needs no extra state.

use crate::duration::{Span, humanize};
use crate::facts::{
    CacertsFacts, CacertsState, ClusterFacts, MountFacts, Observed, OpenBaoFacts, root_issuer_name,
};
use crate::mesh::{CaMode, ClusterSettings, Mesh};
use crate::names::{CACERTS, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
/// Callers name the options next to [`plan`].
pub use crate::plan::PlanOptions;
use crate::plan::{Action, Blocker, Change, Domain, Op, Plan, Target};
use crate::rotation::RotationState;
use crate::rotation_plan::{
    disjoint_roots_warning, foreign_roots_warning, mesh_rotation, plan_trust_facts,
    rotation_warnings,
};

pub fn plan(mesh: &Mesh, observed: &Observed, options: PlanOptions) -> Plan {
    let mut plan = Plan::default();
    crate::bao_plan::plan_openbao(mesh, observed, &mut plan);
    match mesh.ca.mode {
        CaMode::BaoPki => plan_bao_pki(mesh, observed, options, &mut plan),
        CaMode::SharedRoot => plan_shared_root(mesh, observed, options, &mut plan),
    }
    if options.openbao_only {
        crate::remote_plan::plan_unpublish(mesh, observed, &mut plan);
        plan.changes.retain(|c| c.action.needs_openbao_admin());
        return plan;
    }
    crate::remote_plan::plan_remote_secrets(mesh, observed, options.adopt, &mut plan);
    crate::legacy_token::plan_legacy_tokens(mesh, observed, &mut plan);
    crate::handover::block_foreign_writes(mesh, observed, &mut plan);
    if let Some(domain) = options.only {
        plan.restrict_to(domain);
    }
    plan
}

fn cacerts_resource(cluster: &ClusterSettings) -> String {
    format!("Secret {}/{CACERTS}", cluster.istio_namespace)
}

fn cluster_target(cluster: &ClusterSettings) -> Target {
    Target::Cluster {
        name: cluster.name.clone(),
    }
}

fn names(generations: &[u32]) -> String {
    generations
        .iter()
        .map(|g| root_issuer_name(*g))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The roots of a bundle: OpenBao's generations, and the kept roots OpenBao does not hold by fingerprint.
fn trust_names(generations: &[u32], keep: &[String]) -> String {
    keep.iter()
        .map(|fp| format!("kept root sha256 {}", short_fingerprint(fp)))
        .chain(generations.iter().map(|g| root_issuer_name(*g)))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn short_fingerprint(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

fn ensure_namespace(cluster: &ClusterSettings, facts: &ClusterFacts, plan: &mut Plan) {
    if !facts.namespace_exists {
        plan.changes.push(Change {
            target: cluster_target(cluster),
            op: Op::Create,
            resource: format!("Namespace {}", cluster.istio_namespace),
            summary: format!("labelled topology.istio.io/network={}", cluster.network),
            reason: "it does not exist yet and cacerts lives in it".into(),
            action: Action::CreateNamespace {
                cluster: cluster.name.clone(),
                namespace: cluster.istio_namespace.clone(),
            },
        });
    }
}

fn unmanaged_blocker(cluster: &ClusterSettings) -> Blocker {
    Blocker {
        domain: Domain::Trust,
        target: cluster_target(cluster),
        resource: cacerts_resource(cluster),
        reason: format!("exists and is not managed by meshtrust (no {MANAGED_BY_LABEL}={MANAGED_BY_VALUE} label); meshtrust never overwrites it"),
        fix: "check that nothing else (cert-manager, an ExternalSecret) writes it, then rerun with --adopt to let meshtrust take it over".into(),
    }
}

/// istiod takes up a plugged-in CA only if `cacerts` existed when it started; later changes (renewals, a phased
/// root rotation) it reloads by itself.
fn restart_warning(cluster: &ClusterSettings) -> String {
    format!(
        "cluster {}: istiod uses a cacerts only if it existed when istiod started; if istiod already runs there, restart it once after apply (kubectl -n {} rollout restart deployment/istiod). Later renewals and root rotations it reloads by itself",
        cluster.name, cluster.istio_namespace
    )
}

/// Adopting replaces the CA istiod booted with, usually with another root, which istiod does not reload.
fn adopt_restart_warning(cluster: &ClusterSettings) -> String {
    format!(
        "cluster {}: --adopt replaces the CA istiod started with; istiod does not reload a root that is neither a subset nor a superset of the old one, so restart it after apply (kubectl -n {} rollout restart deployment/istiod)",
        cluster.name, cluster.istio_namespace
    )
}

fn plan_bao_pki(mesh: &Mesh, observed: &Observed, options: PlanOptions, plan: &mut Plan) {
    let bao = &observed.openbao;
    if !plan_pki_mount(mesh, &bao.pki_mount, plan) {
        return;
    }
    let newest = match bao.newest_root() {
        Some(root) => root.generation,
        None if crate::import_root::plan_first_root(mesh, observed, plan) => 1,
        // The root to import is missing or unusable (blocked): no intermediate can be signed.
        None => return,
    };
    let rotation = mesh_rotation(mesh, observed, newest, options);
    crate::import_root::plan_imported_root(mesh, observed, &rotation, options, plan);
    if rotation.rotating() {
        plan.warnings.push(format!(
            "root rotation in progress ({}): every istiod needs ISTIO_MULTIROOT_MESH=true to accept a changed root-cert.pem without a restart",
            names(&rotation.trust)
        ));
    }
    rotation_warnings(&rotation, mesh, plan);
    foreign_roots_warning(&rotation, mesh, plan);
    plan.warnings
        .extend(crate::root_end::root_end_warning(mesh, bao, observed.now));
    for cluster in &mesh.clusters {
        // Clusters that were not observed (an agent sees only its own) are not acted on.
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        ensure_namespace(cluster, facts, plan);
        let pki = PkiCluster {
            mesh,
            cluster,
            rotation: &rotation,
            openbao: bao,
            unmanaged_roots: &facts.unmanaged_roots,
        };
        pki.plan_cacerts(&facts.cacerts, options, observed.now, plan);
    }
    plan_trust_facts(mesh, observed, newest, plan);
}

/// Makes sure the PKI mount exists with room for the root's lifetime. False: planning cannot go on.
fn plan_pki_mount(mesh: &Mesh, facts: &MountFacts, plan: &mut Plan) -> bool {
    let mount = mesh.openbao.pki_mount.clone();
    // The mount's max TTL bounds every certificate it signs: make room for the root's lifetime.
    let wanted_ttl = mesh.ca.root.ttl;
    match facts {
        MountFacts::Absent => plan.changes.push(Change {
            target: Target::OpenBao,
            op: Op::Create,
            resource: format!("PKI mount {mount}"),
            summary: format!("max lease TTL {wanted_ttl}"),
            reason: "no secrets engine is mounted there".into(),
            action: Action::EnablePkiMount { mount, max_lease_ttl: wanted_ttl },
        }),
        MountFacts::Present { kind, .. } if kind != "pki" => {
            plan.blockers.push(Blocker {
                domain: Domain::Trust,
                target: Target::OpenBao,
                resource: format!("mount {mount}"),
                reason: format!("is a {kind:?} mount, not pki"),
                fix: "set openbao.pkiMount in the mesh file to a free path or to a PKI mount".into(),
            });
            return false;
        }
        MountFacts::Present { max_lease_ttl, .. } if *max_lease_ttl < wanted_ttl.seconds() => plan.changes.push(Change {
            target: Target::OpenBao,
            op: Op::Update,
            resource: format!("PKI mount {mount}"),
            summary: format!("max lease TTL {} -> {wanted_ttl}", Span(*max_lease_ttl)),
            reason: "the root and intermediate lifetimes need a longer max TTL than the mount allows".into(),
            action: Action::TunePkiMount { mount, max_lease_ttl: wanted_ttl },
        }),
        MountFacts::Present { .. } => {}
    }
    true
}

/// One cluster's `cacerts` in bao-pki mode, planned against the mesh-wide rotation state.
struct PkiCluster<'a> {
    mesh: &'a Mesh,
    cluster: &'a ClusterSettings,
    rotation: &'a RotationState,
    openbao: &'a OpenBaoFacts,
    /// The roots of the cluster's unmanaged `cacerts`, if it has one.
    unmanaged_roots: &'a [String],
}

impl PkiCluster<'_> {
    fn plan_cacerts(
        &self,
        cacerts: &CacertsFacts,
        options: PlanOptions,
        now: i64,
        plan: &mut Plan,
    ) {
        let (mesh, cluster, rotation) = (self.mesh, self.cluster, self.rotation);
        match cacerts {
            CacertsFacts::Absent => {
                plan.changes.push(self.issue(
                    rotation.default_signing,
                    Op::Create,
                    "it does not exist".into(),
                    Vec::new(),
                    false,
                ));
                plan.warnings.push(restart_warning(cluster));
            }
            CacertsFacts::Unmanaged if options.adopt => {
                let signing = rotation.default_signing;
                // The same roots (an imported root, `ca.importRoot`): istiod reloads the new intermediate live.
                let same_roots = !self.unmanaged_roots.is_empty()
                    && rotation.trust_with(signing)
                        == self
                            .unmanaged_roots
                            .iter()
                            .filter_map(|fp| rotation.generation_of(fp))
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect::<Vec<_>>()
                    && self
                        .unmanaged_roots
                        .iter()
                        .all(|fp| rotation.generation_of(fp).is_some());
                let reason = if same_roots {
                    "--adopt: taking over a cacerts meshtrust did not write; its root stays, so istiod takes the new intermediate without a restart"
                } else {
                    "--adopt: taking over a cacerts meshtrust did not write"
                };
                plan.changes
                    .push(self.issue(signing, Op::Update, reason.into(), Vec::new(), true));
                if !same_roots {
                    plan.warnings.push(adopt_restart_warning(cluster));
                }
            }
            CacertsFacts::Unmanaged => plan.blockers.push(unmanaged_blocker(cluster)),
            CacertsFacts::Managed(state) => {
                let current = rotation.issuer_generation(state);
                let before = rotation.trusted_generations(state);
                let keep = rotation.kept_foreign(state);
                let root_end =
                    crate::root_end::root_end(self.openbao, rotation.reissue_signing(current));
                let at = Moment { now, root_end };
                if let Some(reason) = reissue_reason(mesh, cluster, state, at, current, rotation) {
                    let signing = rotation.reissue_signing(current);
                    let after = rotation.trust_with(signing);
                    plan.warnings.extend(disjoint_roots_warning(
                        &cluster.name,
                        &cluster.istio_namespace,
                        &before,
                        &after,
                        !keep.is_empty(),
                    ));
                    plan.changes
                        .push(self.issue(signing, Op::Update, reason, keep, false));
                } else if let Some(reason) = rotation.bundle_update_reason(state) {
                    plan.changes.push(Change {
                        target: cluster_target(cluster),
                        op: Op::Update,
                        resource: cacerts_resource(cluster),
                        summary: format!(
                            "root-cert.pem = {} (intermediate kept)",
                            trust_names(&rotation.trust, &keep)
                        ),
                        reason,
                        action: Action::UpdateTrustBundle {
                            cluster: cluster.name.clone(),
                            trust: rotation.trust.clone(),
                            keep,
                        },
                    });
                }
            }
        }
    }

    /// A new intermediate signed by root `signing`, with a `root-cert.pem` that also trusts that root and
    /// keeps the `keep` roots (held by no OpenBao issuer) from the bundle it replaces.
    fn issue(
        &self,
        signing: u32,
        op: Op,
        reason: String,
        keep: Vec<String>,
        adopt: bool,
    ) -> Change {
        let (mesh, cluster) = (self.mesh, self.cluster);
        let trust = self.rotation.trust_with(signing);
        Change {
            target: cluster_target(cluster),
            op,
            resource: cacerts_resource(cluster),
            summary: format!(
                "new {} intermediate \"{}\" signed by {}; root-cert.pem = {}",
                mesh.ca.intermediate.key,
                cluster.intermediate_common_name(&mesh.mesh_id),
                root_issuer_name(signing),
                trust_names(&trust, &keep)
            ),
            reason,
            action: Action::IssueIntermediate {
                cluster: cluster.name.clone(),
                signing,
                trust,
                keep,
                adopt,
            },
        }
    }
}

/// The time of the observation, and the end of the root a renewal would be signed by (if OpenBao holds it).
#[derive(Clone, Copy)]
struct Moment {
    now: i64,
    root_end: Option<i64>,
}

/// Why an existing managed intermediate must be replaced, if it must.
fn reissue_reason(
    mesh: &Mesh,
    cluster: &ClusterSettings,
    state: &CacertsState,
    Moment { now, root_end }: Moment,
    current: Option<u32>,
    rotation: &RotationState,
) -> Option<String> {
    if !state.problems.is_empty() {
        return Some(format!(
            "the bundle is not usable by istiod: {}",
            state.problems.join("; ")
        ));
    }
    let Some(cert) = &state.ca_cert else {
        return Some("ca-cert.pem does not parse".into());
    };
    if state.format != mesh.ca.secret_format {
        return Some(
            format!(
                "the mesh file asks for the {:?} key layout",
                mesh.ca.secret_format
            )
            .to_lowercase(),
        );
    }
    let remaining = cert.not_after.saturating_sub(now);
    let renew_before = mesh.ca.intermediate.renew_before.seconds() as i64;
    // Near the root's end a renewal would end no later (see `root_end`): the root-end warning stands instead.
    let extends = root_end.is_none_or(|end| {
        crate::root_end::renewal_extends(cert.not_after, now, mesh.ca.intermediate.ttl, end)
    });
    if remaining < renew_before && extends {
        return Some(if remaining <= 0 {
            format!(
                "the intermediate (serial {}) expired {} ago",
                cert.serial,
                humanize(remaining.saturating_neg())
            )
        } else {
            format!(
                "the intermediate (serial {}) expires in {}, within renewBefore {}",
                cert.serial,
                humanize(remaining),
                mesh.ca.intermediate.renew_before
            )
        });
    }
    if cert.key != Some(mesh.ca.intermediate.key) {
        let have = cert
            .key
            .map(|k| k.to_string())
            .unwrap_or_else(|| "an unknown key type".into());
        return Some(format!(
            "its key is {have}; the mesh file asks for {}",
            mesh.ca.intermediate.key
        ));
    }
    let expected_cn = cluster.intermediate_common_name(&mesh.mesh_id);
    if cert.subject_cn != expected_cn {
        return Some(format!(
            "its subject is \"{}\", expected \"{expected_cn}\"",
            cert.subject_cn
        ));
    }
    if rotation.moves_intermediate(current) {
        return Some(match current {
            Some(_) => format!(
                "root rotation phase 2: every cluster trusts {}, so intermediates move to it",
                root_issuer_name(rotation.newest)
            ),
            None => format!(
                "the intermediate (serial {}) was signed by a root OpenBao does not hold; every cluster now trusts {}, so it moves to it (the old root stays trusted until the dwell has passed)",
                cert.serial,
                root_issuer_name(rotation.newest)
            ),
        });
    }
    None
}

fn plan_shared_root(mesh: &Mesh, observed: &Observed, options: PlanOptions, plan: &mut Plan) {
    plan.warnings.push(format!(
        "ca.mode shared-root copies the ROOT KEY into every cluster's cacerts (seed 001's design). Anyone who can read istio-system Secrets in any cluster can mint identities for the whole mesh. Prefer ca.mode bao-pki, where the root key never leaves OpenBao. (KV: {}/{})",
        mesh.openbao.kv_mount, mesh.ca.shared_root_kv_path
    ));
    let shared = observed.openbao.shared_root.as_ref();
    if shared.is_none() {
        plan.changes.push(Change {
            target: Target::OpenBao,
            op: Op::Create,
            resource: format!(
                "KV {}/{}",
                mesh.openbao.kv_mount, mesh.ca.shared_root_kv_path
            ),
            summary: format!(
                "shared root bundle \"{}\", {}, ttl {}",
                mesh.ca.root.common_name, mesh.ca.root.key, mesh.ca.root.ttl
            ),
            reason: "no shared root bundle is stored yet (written create-only with check-and-set)"
                .into(),
            action: Action::CreateSharedRoot {
                kv_path: mesh.ca.shared_root_kv_path.clone(),
            },
        });
    }
    for cluster in &mesh.clusters {
        // Clusters that were not observed (an agent sees only its own) are not acted on.
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        ensure_namespace(cluster, facts, plan);
        let write = |op: Op, reason: String, adopt: bool| Change {
            target: cluster_target(cluster),
            op,
            resource: cacerts_resource(cluster),
            summary: "the shared root as the cluster's CA (root key included)".into(),
            reason,
            action: Action::WriteSharedRoot {
                cluster: cluster.name.clone(),
                adopt,
            },
        };
        match &facts.cacerts {
            CacertsFacts::Absent => {
                plan.changes
                    .push(write(Op::Create, "it does not exist".into(), false))
            }
            CacertsFacts::Unmanaged if options.adopt => plan.changes.push(write(
                Op::Update,
                "--adopt: taking over a cacerts meshtrust did not write".into(),
                true,
            )),
            CacertsFacts::Unmanaged => plan.blockers.push(unmanaged_blocker(cluster)),
            CacertsFacts::Managed(state) => {
                let reason = if !state.problems.is_empty() {
                    Some(format!(
                        "the bundle is not usable by istiod: {}",
                        state.problems.join("; ")
                    ))
                } else if state.format != mesh.ca.secret_format {
                    Some("the mesh file asks for another key layout".to_string())
                } else {
                    match (shared, &state.ca_cert) {
                        (Some(root), Some(cert)) if root.fingerprint == cert.fingerprint => None,
                        _ => Some("it does not hold the shared root stored in OpenBao".to_string()),
                    }
                };
                if let Some(reason) = reason {
                    plan.changes.push(write(Op::Update, reason, false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

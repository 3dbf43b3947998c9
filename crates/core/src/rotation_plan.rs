//! The mesh-wide side of root rotation planning: the rotation state judged on every cluster (connected or as
//! published), the trust facts a connected cluster publishes, and the warnings about istiod.

use crate::facts::{CacertsFacts, Observed, OpenBaoFacts, root_issuer_name};
use crate::mesh::Mesh;
use crate::plan::{Action, Change, Op, Plan, PlanOptions, Target};
use crate::rotation::{DwellGate, RotationPhase, RotationState};
use crate::trust_facts::{TRUST_KV_PATH, TrustFacts};
use crate::trust_view::{desired_facts, mesh_views};

/// The rotation state of the whole mesh, as far as it is known.
pub fn mesh_rotation(
    mesh: &Mesh,
    observed: &Observed,
    newest: u32,
    options: PlanOptions,
) -> RotationState {
    let bao = &observed.openbao;
    let newest_fp = newest_fingerprint(bao, newest);
    let views = mesh_views(mesh, observed, newest_fp);
    let gate = DwellGate {
        now: observed.now,
        dwell: (!options.skip_dwell).then_some(mesh.ca.phase_dwell.seconds()),
    };
    RotationState::mesh_wide(newest, &bao.roots, &views, gate)
}

fn newest_fingerprint(bao: &OpenBaoFacts, newest: u32) -> Option<&str> {
    bao.roots
        .iter()
        .find(|r| r.generation == newest)
        .map(|r| r.cert.fingerprint.as_str())
}

/// Warnings about the rotation that the operator must act on: what the next phase waits for when an istiod
/// did not take the new roots.
pub fn rotation_warnings(rotation: &RotationState, mesh: &Mesh, plan: &mut Plan) {
    if rotation.phase == RotationPhase::Settled {
        return;
    }
    if mesh.ca.phase_dwell.seconds() < KUBELET_SAFE_DWELL {
        plan.warnings.push(format!(
            "ca.rootRotation.phaseDwell is {}: an istiod running as a pod sees a changed cacerts only when the kubelet next syncs its pod (up to about 2 minutes with the kubelet's defaults), while the dwell counts from the change, so a dwell this short can drop the old root while an istiod still signs under it. Use 5m or more unless istiod reads cacerts directly (docs/ca.md)",
            mesh.ca.phase_dwell
        ));
    }
    for wait in &rotation.waiting {
        if wait.contains("istiod does not serve") {
            plan.warnings.push(format!("root rotation waits: {wait}"));
        }
    }
}

/// The shortest dwell that outlasts the kubelet's delay in bringing a changed Secret into a pod: its sync
/// period (1 min by default) plus its Secret cache's TTL (1 min), with margin.
const KUBELET_SAFE_DWELL: u64 = 300;

/// Each connected cluster publishes its trust facts once a second root exists, whenever they changed.
pub fn plan_trust_facts(mesh: &Mesh, observed: &Observed, newest: u32, plan: &mut Plan) {
    let trust = &observed.trust;
    if !trust.read {
        return;
    }
    let Some(newest_fp) = newest_fingerprint(&observed.openbao, newest) else {
        return;
    };
    let recovery_since = recovery_since(observed);
    for cluster in &mesh.clusters {
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        let state = match &facts.cacerts {
            CacertsFacts::Managed(state) => Some(state),
            _ => None,
        };
        let served = trust.served.get(&cluster.name).and_then(Option::as_ref);
        let previous = trust.facts_of(&cluster.name);
        let desired = desired_facts(state, served, previous, newest_fp, observed.now);
        // An entry written before a peer's entry that names a root OpenBao does not hold may be one OpenBao
        // handed back from an older snapshot, which peers doubt: written again, unchanged, it counts.
        let current = |p: &TrustFacts| {
            recovery_since.is_none_or(|since| p.published_at.is_some_and(|at| at >= since))
        };
        if previous.is_some_and(|p| p.same_as(&desired) && current(p)) {
            continue;
        }
        plan.changes.push(Change {
            target: Target::OpenBao,
            op: if trust.published.contains_key(&cluster.name) {
                Op::Update
            } else {
                Op::Create
            },
            resource: format!(
                "KV {}/{TRUST_KV_PATH}/{}",
                mesh.openbao.kv_mount, cluster.name
            ),
            summary: format!(
                "trust facts of {} for {}",
                cluster.name,
                root_issuer_name(newest)
            ),
            reason: "peers' agents advance a root rotation only on every cluster's published trust"
                .into(),
            action: Action::PublishTrustFacts {
                cluster: cluster.name.clone(),
                facts: desired,
            },
        });
    }
}

/// Clusters trust roots OpenBao does not hold: it was restored from an older snapshot or replaced by an
/// empty one. Said once per plan, with what meshtrust does about it.
pub fn foreign_roots_warning(rotation: &RotationState, mesh: &Mesh, plan: &mut Plan) {
    if rotation.foreign.is_empty() {
        return;
    }
    let roots: Vec<String> = rotation
        .foreign
        .iter()
        .map(|fp| format!("sha256 {}", fp.get(..16).unwrap_or(fp)))
        .collect();
    let fate = if rotation.keep_foreign {
        format!(
            "they stay in every bundle that holds them, and the mesh moves to {} through the three rotation phases; they leave only after every cluster has signed with {} for ca.rootRotation.phaseDwell ({})",
            root_issuer_name(rotation.newest),
            root_issuer_name(rotation.newest),
            mesh.ca.phase_dwell
        )
    } else {
        format!(
            "every cluster has signed with {} for ca.rootRotation.phaseDwell, so they leave the bundles now",
            root_issuer_name(rotation.newest)
        )
    };
    plan.warnings.push(format!(
        "clusters trust root(s) OpenBao does not hold ({}): OpenBao was restored from an older snapshot or replaced by an empty one. Nothing is signed by them again; {fate} (docs/operations.md, \"Restore\")",
        roots.join(", ")
    ));
}

/// When the newest published entry naming a root OpenBao does not hold was written: a recovery from an
/// older snapshot is under way since then.
fn recovery_since(observed: &Observed) -> Option<i64> {
    observed
        .trust
        .published
        .values()
        .filter_map(|p| p.facts.as_ref())
        .filter(|f| {
            f.trusted_roots
                .iter()
                .chain(f.signing_root.as_ref())
                .any(|fp| observed.openbao.root_by_fingerprint(fp).is_none())
        })
        .filter_map(|f| f.published_at)
        // A peer writes its own time: one from the future (a wrong clock, or a compromised agent) would make
        // every agent rewrite its entry in every round.
        .filter(|at| *at <= observed.now)
        .max()
}

/// A `root-cert.pem` change istiod takes without a restart only when one root set contains the other.
/// `keeps_foreign`: the new file also keeps the bundle's roots OpenBao does not hold.
pub fn disjoint_roots_warning(
    cluster: &str,
    namespace: &str,
    before: &[Option<u32>],
    after: &[u32],
    keeps_foreign: bool,
) -> Option<String> {
    let after: Vec<Option<u32>> = after
        .iter()
        .map(|g| Some(*g))
        .chain(keeps_foreign.then_some(None))
        .collect();
    let subset = before.iter().all(|g| after.contains(g));
    let superset = after.iter().all(|g| before.contains(g));
    if before.is_empty() || subset || superset {
        return None;
    }
    Some(format!(
        "cluster {cluster}: the new root-cert.pem is neither a subset nor a superset of the old one, which istiod does not reload; restart istiod after apply (kubectl -n {namespace} rollout restart deployment/istiod)"
    ))
}

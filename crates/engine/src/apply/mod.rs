//! Executing a plan, change by change, in order. Each domain has its applier, mirroring the planners:
//! OpenBao's configuration, trust (roots, intermediates, `cacerts`) and remote secrets. Every write is
//! conditional (create-only, resourceVersion, check-and-set), so a change that loses a race surfaces as a
//! conflict and the caller observes and plans again.

mod openbao_config;
mod remote_secrets;
pub(crate) mod trust;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use meshtrust_core::mesh::{ClusterSettings, Mesh};
use meshtrust_core::plan::{Action, Change, Domain, Plan};
use meshtrust_core::policy::ADMIN_POLICY;
use meshtrust_core::ports::{Cluster, KvEntry, OpenBao, SecretObject};
use meshtrust_core::secret::SecretBytes;

use crate::EngineError;
use crate::names::root_issuer_name;
use crate::outcome::{AppliedChange, ApplyReport};
use crate::snapshot::Snapshot;
pub use trust::root_request;

/// The systems an applier writes to, and the mesh file that says what is wanted.
pub(crate) struct Targets<'a> {
    pub mesh: &'a Mesh,
    pub bao: &'a dyn OpenBao,
    pub clusters: &'a BTreeMap<String, Arc<dyn Cluster>>,
}

impl Targets<'_> {
    pub fn cluster(&self, name: &str) -> Result<&dyn Cluster, EngineError> {
        self.clusters
            .get(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| EngineError::UnknownCluster(name.to_string()))
    }

    pub fn settings(&self, name: &str) -> Result<&ClusterSettings, EngineError> {
        self.mesh
            .cluster(name)
            .ok_or_else(|| EngineError::UnknownCluster(name.to_string()))
    }
}

/// What this run has written so far, layered over the snapshot it planned from: later changes in the same
/// plan need the new root, the `cacerts` just written (its new resourceVersion) or the kubeconfig just published.
pub(crate) struct RunState<'a> {
    snapshot: &'a Snapshot,
    roots_pem: Option<BTreeMap<u32, String>>,
    shared_root: Option<KvEntry>,
    cacerts: BTreeMap<String, SecretObject>,
    published: BTreeMap<String, (SecretBytes, u64)>,
}

impl<'a> RunState<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        RunState {
            snapshot,
            roots_pem: None,
            shared_root: None,
            cacerts: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        self.snapshot
    }

    pub fn root_pem(&self, generation: u32) -> Result<String, EngineError> {
        self.roots_pem
            .as_ref()
            .unwrap_or(&self.snapshot.roots_pem)
            .get(&generation)
            .cloned()
            .ok_or_else(|| {
                EngineError::Inconsistent(format!(
                    "{} is not in OpenBao; run plan again",
                    root_issuer_name(generation)
                ))
            })
    }

    pub fn cacerts(&self, cluster: &str) -> Option<&SecretObject> {
        self.cacerts
            .get(cluster)
            .or_else(|| self.snapshot.cacerts.get(cluster)?.as_ref())
    }

    pub fn shared_root(&self) -> Option<&KvEntry> {
        self.shared_root
            .as_ref()
            .or(self.snapshot.shared_root.as_ref())
    }

    pub fn published(&self, cluster: &str) -> Option<&(SecretBytes, u64)> {
        self.published.get(cluster)
    }
}

/// How many independent OpenBao configuration changes run at once (1,000 clusters' auth mounts, roles and
/// policies take seconds instead of a minute). OpenBao enables auth mounts one at a time; more writes in flight
/// keep its other work (roles, configs, policies) going meanwhile: measured with 1,001 clusters, 64 took 4.8 s
/// where 16 took 6.0 s and 4 took 7.7 s on the loaded 2-core machine.
const CONFIG_CONCURRENCY: usize = 64;

/// The key that orders OpenBao configuration changes: changes with the same key run in plan order, different
/// keys run concurrently. `None` is a barrier (the namespace and the KV mount come before anything else).
fn config_key(action: &Action) -> Option<String> {
    match action {
        Action::EnableAuthMount { mount, .. }
        | Action::ConfigureAuth { mount, .. }
        | Action::WriteAgentRole { mount, .. } => Some(format!("auth/{mount}")),
        // The admin policy is a barrier: the changes after it may need the rules it adds for the token
        // applying them (a new cluster's auth mount).
        Action::WritePolicy { name } if name == ADMIN_POLICY => None,
        Action::WritePolicy { name } => Some(format!("policy/{name}")),
        _ => None,
    }
}

/// Applies `plan`, made from `snapshot`. `progress` hears about each change as it completes.
pub(crate) async fn apply(
    targets: &Targets<'_>,
    plan: &Plan,
    snapshot: &Snapshot,
    progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
) -> Result<ApplyReport, EngineError> {
    if !plan.blockers.is_empty() {
        return Err(EngineError::Blocked(plan.blockers.clone()));
    }
    let mut run = RunState::new(snapshot);
    let mut report = ApplyReport {
        applied: vec![],
        warnings: plan.warnings.clone(),
    };
    let mut done = |change: &Change, detail: String| {
        let applied = AppliedChange {
            resource: change.resource.clone(),
            target: change.target.to_string(),
            detail,
        };
        progress(change, &applied);
        report.applied.push(applied);
    };
    let mut rest = plan.changes.as_slice();
    while let Some(change) = rest.first() {
        let batch = rest
            .iter()
            .take_while(|c| {
                c.action.domain() == Domain::OpenBaoConfig && config_key(&c.action).is_some()
            })
            .count();
        if batch > 1 {
            // The CA's setup right after the batch needs nothing from it: it runs alongside (generating an
            // RSA-4096 root takes seconds, as long as a thousand clusters' auth mounts).
            let alongside = rest[batch..]
                .iter()
                .take_while(|c| is_ca_setup(&c.action))
                .count();
            let (config, ca) = futures::join!(
                apply_config_batch(targets, snapshot, &rest[..batch]),
                apply_in_order(targets, &mut run, &rest[batch..batch + alongside]),
            );
            for (change, detail) in config?.into_iter().chain(ca?) {
                done(change, detail);
            }
            rest = &rest[batch + alongside..];
            continue;
        }
        let action = &change.action;
        let detail = match action.domain() {
            Domain::OpenBaoConfig => openbao_config::apply(targets, snapshot, action).await?,
            Domain::Trust => trust::apply(targets, &mut run, action).await?,
            Domain::RemoteSecrets => remote_secrets::apply(targets, &mut run, action).await?,
        };
        done(change, detail);
        rest = &rest[1..];
    }
    Ok(report)
}

/// The CA's setup inside OpenBao (its PKI mount and root): independent of the auth mounts, roles and policies.
fn is_ca_setup(action: &Action) -> bool {
    matches!(
        action,
        Action::EnablePkiMount { .. } | Action::TunePkiMount { .. } | Action::GenerateRoot { .. }
    )
}

/// Trust changes one after another, stopping at the first failure.
async fn apply_in_order<'c>(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    changes: &'c [Change],
) -> Result<Vec<(&'c Change, String)>, EngineError> {
    let mut out = Vec::new();
    for change in changes {
        out.push((change, trust::apply(targets, run, &change.action).await?));
    }
    Ok(out)
}

/// Independent OpenBao configuration changes, concurrently by key and in order within a key. Reported in plan
/// order once all are done; the first failure is returned (the others have been made, which a re-run sees).
async fn apply_config_batch<'c>(
    targets: &Targets<'_>,
    snapshot: &Snapshot,
    changes: &'c [Change],
) -> Result<Vec<(&'c Change, String)>, EngineError> {
    // Groups in order of first appearance, so that the start order follows the plan.
    let mut groups: Vec<Vec<(usize, &'c Change)>> = Vec::new();
    let mut group_of: BTreeMap<String, usize> = BTreeMap::new();
    for (index, change) in changes.iter().enumerate() {
        let key = config_key(&change.action).unwrap_or_default();
        let next = groups.len();
        let group = *group_of.entry(key).or_insert(next);
        if group == next {
            groups.push(Vec::new());
        }
        groups[group].push((index, change));
    }
    let results: Vec<Vec<(usize, Result<String, EngineError>)>> = futures::stream::iter(groups)
        .map(|group| async move {
            let mut out = Vec::new();
            for (index, change) in group {
                let result = openbao_config::apply(targets, snapshot, &change.action).await;
                let failed = result.is_err();
                out.push((index, result));
                if failed {
                    break;
                }
            }
            out
        })
        .buffer_unordered(CONFIG_CONCURRENCY)
        .collect()
        .await;
    let mut ordered: Vec<(usize, Result<String, EngineError>)> =
        results.into_iter().flatten().collect();
    ordered.sort_by_key(|(index, _)| *index);
    ordered
        .into_iter()
        .map(|(index, result)| result.map(|detail| (&changes[index], detail)))
        .collect()
}

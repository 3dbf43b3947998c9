//! The engine's entry points: observe → plan → apply, retried from the top when a conditional write loses a
//! race, so that two concurrent runs both end in the same consistent state.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshtrust_core::facts::{ObjectState, Observed};
use meshtrust_core::mesh::{CaMode, Mesh};
use meshtrust_core::plan::{Action, Change, Plan, Target};
use meshtrust_core::planner::{PlanOptions, plan};
use meshtrust_core::ports::{Cluster, GenerateOutcome, OpenBao};

use crate::EngineError;
use crate::apply::{Targets, apply};
use crate::names::root_issuer_name;
use crate::observe::{Reads, observe};
use crate::outcome::{AppliedChange, ApplyReport};
use crate::published::{Changed, PublishedCache, Wrote, changed_since, marker_version};
use crate::snapshot::Snapshot;

/// What an engine may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The admin CLI: OpenBao's configuration and CA, and every connected cluster.
    Admin,
    /// `apply --openbao-only`: OpenBao's configuration and CA; the clusters are left to their agents.
    OpenBaoOnly,
    /// An agent: its own cluster, with no power over OpenBao's configuration.
    Agent,
}

pub struct Engine {
    mesh: Mesh,
    bao: Arc<dyn OpenBao>,
    clusters: BTreeMap<String, Arc<dyn Cluster>>,
    scope: Scope,
    cache: Option<PublishedCache>,
}

const CONFLICT_RETRIES: usize = 5;

/// The outcome of `ca rotate-root --start`'s first step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationStart {
    /// A new root issuer now exists inside OpenBao.
    Generated { issuer_name: String },
    /// Another run created the same generation a moment ago.
    AlreadyExists { issuer_name: String },
}

impl Engine {
    /// An admin engine (scope [`Scope::Admin`]).
    pub fn new(
        mesh: Mesh,
        bao: Arc<dyn OpenBao>,
        clusters: BTreeMap<String, Arc<dyn Cluster>>,
    ) -> Self {
        Self {
            mesh,
            bao,
            clusters,
            scope: Scope::Admin,
            cache: None,
        }
    }

    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Remember peers' published entries across rounds in `cache`, re-reading only those marked stale (an agent
    /// marks what the change marker names).
    pub fn with_published_cache(mut self, cache: PublishedCache) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    fn targets(&self) -> Targets<'_> {
        Targets {
            mesh: &self.mesh,
            bao: self.bao.as_ref(),
            clusters: &self.clusters,
        }
    }

    /// Moves the change marker for a write whose bump was lost ([`EngineError::MarkerNotMoved`]), so peers
    /// learn of it at their next poll rather than at their next full re-read.
    pub async fn bump_marker(
        &self,
        cluster: &str,
        wrote: crate::published::Wrote,
    ) -> Result<(), EngineError> {
        crate::published::bump_marker(self.bao.as_ref(), &self.mesh, cluster, wrote).await
    }

    pub async fn observe(&self, now: i64) -> Result<Snapshot, EngineError> {
        let reads = match self.scope {
            Scope::Admin => Reads::Admin,
            Scope::OpenBaoOnly => Reads::OpenBaoOnly,
            Scope::Agent => Reads::Agent,
        };
        observe(
            &self.mesh,
            self.bao.as_ref(),
            &self.clusters,
            now,
            reads,
            self.cache.as_ref(),
        )
        .await
    }

    /// The change marker's version: one small read, whatever the mesh's size. The agent polls it.
    pub async fn index_version(&self) -> Result<u64, EngineError> {
        marker_version(self.bao.as_ref(), &self.mesh).await
    }

    /// Which mesh clusters published what since marker version `seen` (up to `current`); `None` when that cannot
    /// be told (a long gap), and everything should be re-read.
    pub async fn changed_since(
        &self,
        seen: u64,
        current: u64,
    ) -> Result<Option<Changed>, EngineError> {
        changed_since(self.bao.as_ref(), &self.mesh, seen, current).await
    }

    pub async fn plan(
        &self,
        now: i64,
        options: PlanOptions,
    ) -> Result<(Plan, Snapshot), EngineError> {
        let snapshot = self.observe(now).await?;
        let options = PlanOptions {
            openbao_only: options.openbao_only || self.scope == Scope::OpenBaoOnly,
            ..options
        };
        let mut plan = plan(&self.mesh, snapshot.facts(), options);
        if self.scope != Scope::Agent {
            // Only a cluster's own agent may write its trust facts.
            plan.changes.retain(|c| !c.action.agent_only());
        }
        match self.scope {
            Scope::Admin => {}
            Scope::Agent => {
                plan.changes.retain(|c| !c.action.needs_openbao_admin());
                leave_cluster_admin_changes(&mut plan, snapshot.facts());
            }
            Scope::OpenBaoOnly => {
                plan.changes.retain(|c| c.action.needs_openbao_admin());
                plan.blockers.clear();
                plan.warnings.clear();
            }
        }
        Ok((plan, snapshot))
    }

    /// Applies `plan`, made from `snapshot`. `progress` hears about each change as it completes.
    pub async fn apply(
        &self,
        plan: &Plan,
        snapshot: &Snapshot,
        progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
    ) -> Result<ApplyReport, EngineError> {
        let report = apply(&self.targets(), plan, snapshot, progress).await;
        // What this engine published itself is read back next round; the rest stays remembered.
        if let Some(cache) = &self.cache {
            cache.mark_stale(plan.changes.iter().filter_map(|c| match &c.action {
                Action::PublishRemoteSecret { cluster } => Some(cluster.clone()),
                _ => None,
            }));
            cache.mark_trust_stale(plan.changes.iter().filter_map(|c| match &c.action {
                Action::PublishTrustFacts { cluster, .. } => Some(cluster.clone()),
                _ => None,
            }));
        }
        report
    }

    /// Plans and applies until nothing conflicts. `now` is read once per attempt by the caller's clock.
    /// Also returns the snapshot the applied plan was made from: when nothing was applied, it is the
    /// current state, and callers need not observe again.
    pub async fn converge(
        &self,
        clock: &(dyn Fn() -> i64 + Send + Sync),
        options: PlanOptions,
        progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
    ) -> Result<(Plan, ApplyReport, Snapshot), EngineError> {
        self.converge_announcing(clock, options, &mut |_| {}, progress)
            .await
    }

    /// [`converge`](Self::converge), telling `planned` each plan before it is applied (a progress bar's total).
    pub async fn converge_announcing(
        &self,
        clock: &(dyn Fn() -> i64 + Send + Sync),
        options: PlanOptions,
        planned: &mut (dyn FnMut(&Plan) + Send),
        progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
    ) -> Result<(Plan, ApplyReport, Snapshot), EngineError> {
        let mut attempt = 0;
        let mut earlier: Vec<AppliedChange> = Vec::new();
        // A write that landed but whose marker bump lost every try: the next plan has nothing left to write
        // for it and so would bump nothing, and peers would learn of it only at their hourly re-read.
        let mut owed_bump: Option<(String, Wrote)> = None;
        loop {
            if let Some((cluster, wrote)) = owed_bump.take() {
                self.bump_marker(&cluster, wrote).await?;
            }
            let (plan, snapshot) = self.plan(clock(), options).await?;
            planned(&plan);
            let mut recorder = |change: &Change, applied: &AppliedChange| {
                earlier.push(applied.clone());
                progress(change, applied);
            };
            match self.apply(&plan, &snapshot, &mut recorder).await {
                Ok(mut report) => {
                    // Report every change made, including those of attempts that later lost a race.
                    report.applied = earlier;
                    return Ok((plan, report, snapshot));
                }
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => {
                    tracing::info!(error = %e, attempt, "a conditional write lost a race; observing again");
                    if let EngineError::MarkerNotMoved { cluster, wrote, .. } = e {
                        owed_bump = Some((cluster, wrote));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies only the policy changes a fresh observation plans (after a new root appears).
    async fn rewrite_policies(&self, now: i64) -> Result<(), EngineError> {
        let (mut plan, snapshot) = self.plan(now, PlanOptions::default()).await?;
        plan.changes
            .retain(|c| matches!(c.action, Action::WritePolicy { .. }));
        plan.blockers.clear();
        self.apply(&plan, &snapshot, &mut |_, _| {}).await?;
        Ok(())
    }

    /// Creates the next root generation inside OpenBao, which starts a phased rotation. The caller makes sure
    /// the mesh is settled first (an empty plan).
    pub async fn start_root_rotation(
        &self,
        snapshot: &Snapshot,
    ) -> Result<RotationStart, EngineError> {
        if self.mesh.ca.mode != CaMode::BaoPki {
            return Err(EngineError::Inconsistent(
                "root rotation works in ca.mode bao-pki; a shared root cannot be rotated without a trust gap".into(),
            ));
        }
        let next = snapshot
            .facts()
            .openbao
            .newest_root()
            .map(|r| r.generation + 1)
            .ok_or_else(|| {
                EngineError::Inconsistent(
                    "there is no root to rotate yet; run `meshtrust apply` first".into(),
                )
            })?;
        let request = crate::apply::root_request(&self.mesh, next);
        let issuer_name = root_issuer_name(next);
        let outcome = self
            .bao
            .generate_root(&self.mesh.openbao.pki_mount, &request)
            .await?;
        // The agents' policies name the roots they may sign with: add the new one before anyone needs it.
        if self.scope != Scope::Agent {
            self.rewrite_policies(snapshot.facts().now).await?;
        }
        // Idle agents poll only the change marker: bump it, naming no cluster, so they run a round at once and
        // take up the new root (re-reading no peer).
        crate::published::bump_marker(self.bao.as_ref(), &self.mesh, "", Wrote::Entry).await?;
        match outcome {
            GenerateOutcome::Created => Ok(RotationStart::Generated { issuer_name }),
            GenerateOutcome::AlreadyExists => Ok(RotationStart::AlreadyExists { issuer_name }),
        }
    }
}

/// An agent holds no right to write RBAC or namespaces (it could otherwise grant itself anything), so such
/// changes become warnings naming who makes them. Publishing needs the reader ServiceAccount; while it is
/// missing, publishing would only fail, so it waits too.
fn leave_cluster_admin_changes(plan: &mut Plan, facts: &Observed) {
    let (admin, own): (Vec<Change>, Vec<Change>) = std::mem::take(&mut plan.changes)
        .into_iter()
        .partition(|c| c.action.needs_cluster_admin());
    plan.changes = own;
    for change in admin {
        let Target::Cluster { name } = &change.target else {
            continue;
        };
        plan.warnings.push(format!(
            "cluster {name}: {} needs {}, which the agent may not write (it holds no RBAC or namespace rights); apply the deploy files (`meshtrust render agent --cluster {name} | kubectl apply -f -`) or run `meshtrust apply`",
            change.resource, change.summary
        ));
        let reader_missing = facts
            .clusters
            .get(name)
            .is_some_and(|c| c.reader.service_account == ObjectState::Absent);
        if reader_missing {
            plan.changes.retain(|c| {
                !matches!(&c.action, Action::PublishRemoteSecret { cluster } if cluster == name)
            });
        }
    }
}

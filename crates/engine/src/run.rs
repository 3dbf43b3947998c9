//! The engine's entry points: observe → plan → apply, retried from the top when a conditional write loses a
//! race, so that two concurrent runs both end in the same consistent state.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshtrust_core::mesh::Mesh;
use meshtrust_core::plan::{Change, Plan};
use meshtrust_core::planner::{PlanOptions, plan};
use meshtrust_core::ports::{Cluster, OpenBao};

use crate::EngineError;
use crate::apply::{AppliedChange, ApplyReport};
use crate::observe::{Observation, observe};

pub struct Engine {
    pub(crate) mesh: Mesh,
    pub(crate) bao: Arc<dyn OpenBao>,
    pub(crate) clusters: BTreeMap<String, Arc<dyn Cluster>>,
    /// Whether this engine manages OpenBao's configuration (the admin CLI does; an agent cannot).
    pub(crate) manage_openbao: bool,
    /// Whether this engine writes to the clusters (`apply --openbao-only` does not: the agents will).
    pub(crate) manage_clusters: bool,
}

const CONFLICT_RETRIES: usize = 5;

impl Engine {
    pub fn new(
        mesh: Mesh,
        bao: Arc<dyn OpenBao>,
        clusters: BTreeMap<String, Arc<dyn Cluster>>,
    ) -> Self {
        Self {
            mesh,
            bao,
            clusters,
            manage_openbao: true,
            manage_clusters: true,
        }
    }

    /// An engine that configures OpenBao only and leaves the clusters to their agents.
    pub fn only_openbao_config(mut self) -> Self {
        self.manage_clusters = false;
        self
    }

    /// An engine that leaves OpenBao's configuration (mounts, auth, policies) alone, as an agent must.
    pub fn without_openbao_config(mut self) -> Self {
        self.manage_openbao = false;
        self
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub(crate) fn cluster(&self, name: &str) -> Result<&Arc<dyn Cluster>, EngineError> {
        self.clusters
            .get(name)
            .ok_or_else(|| EngineError::UnknownCluster(name.to_string()))
    }

    pub async fn observe(&self, now: i64) -> Result<Observation, EngineError> {
        observe(
            &self.mesh,
            self.bao.as_ref(),
            &self.clusters,
            now,
            self.manage_openbao,
        )
        .await
    }

    pub async fn plan(
        &self,
        now: i64,
        options: PlanOptions,
    ) -> Result<(Plan, Observation), EngineError> {
        let observation = self.observe(now).await?;
        let mut plan = plan(&self.mesh, &observation.facts, options);
        if !self.manage_openbao {
            plan.changes.retain(|c| !c.action.is_openbao_config());
        }
        if !self.manage_clusters {
            plan.changes.retain(|c| c.action.is_openbao_config());
            plan.blockers.clear();
            plan.warnings.clear();
        }
        Ok((plan, observation))
    }

    /// Plans and applies until nothing conflicts. `now` is read once per attempt by the caller's clock.
    /// Also returns the observation the applied plan was made from: when nothing was applied, it is the
    /// current state, and callers need not observe again.
    pub async fn converge(
        &self,
        clock: &(dyn Fn() -> i64 + Send + Sync),
        options: PlanOptions,
        progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
    ) -> Result<(Plan, ApplyReport, Observation), EngineError> {
        let mut attempt = 0;
        let mut earlier: Vec<AppliedChange> = Vec::new();
        loop {
            let (plan, observation) = self.plan(clock(), options).await?;
            let mut recorder = |change: &Change, applied: &AppliedChange| {
                earlier.push(applied.clone());
                progress(change, applied);
            };
            match self.apply(&plan, &observation, &mut recorder).await {
                Ok(mut report) => {
                    // Report every change made, including those of attempts that later lost a race.
                    report.applied = earlier;
                    return Ok((plan, report, observation));
                }
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => {
                    tracing::info!(error = %e, attempt, "a conditional write lost a race; observing again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

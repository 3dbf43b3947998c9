//! The agent's loop: reconcile on a watch event (drift), on a change in OpenBao's index (poll), on a periodic
//! resync (renewals), and retry failures with jittered exponential backoff. A failed round writes nothing more
//! than what it had applied, and deletes nothing: the last good state stays in place.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use meshtrust_bao::OpenBaoClient;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::plan::Action;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::{Cluster, ErrorKind, PortError, System};
use meshtrust_engine::published::{PublishedCache, Wrote};
use meshtrust_engine::trust_facts::served_roots;
use meshtrust_engine::{Engine, EngineError, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Scope, Snapshot};
use meshtrust_kube::KubeCluster;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::lease::{Elector, LeaseTask};
use crate::{Health, JwtSource, login};

pub struct AgentConfig {
    pub mesh: Mesh,
    pub cluster: String,
    /// `None`: in-cluster config (or the default kubeconfig).
    pub kubeconfig: Option<PathBuf>,
    pub jwt: JwtSource,
    pub listen: SocketAddr,
    pub poll_interval: Duration,
    /// A full reconcile at least this often, so renewals happen even when nothing changes.
    pub resync_interval: Duration,
    /// Every peer re-read at least this often even if the marker named none: a lost or forged hint delays an
    /// update by at most this long.
    pub full_reread_interval: Duration,
    /// OpenBao without a token; the agent logs in for its own.
    pub openbao: OpenBaoClient,
    /// A round that runs longer is abandoned, counted as a failure and retried with backoff.
    pub round_deadline: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cluster {0} is not in the mesh file")]
    UnknownCluster(String),
    #[error(transparent)]
    Connect(#[from] meshtrust_kube::ConnectError),
    #[error(transparent)]
    Listen(#[from] crate::ListenError),
}

/// `meshtrust_certificate_expiry_timestamp{secret=...}` of the root that signed the cluster's intermediate.
const ROOT_EXPIRY_LABEL: &str = "cacerts/root";

/// Why a round runs, which decides what it re-reads of peers' published entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Start, after a failure, or the periodic peer re-read: every peer.
    Full,
    /// The marker moved up to `marker` and named who changed: those peers.
    Hinted { marker: u64 },
    /// A watched Secret drifted, or a failed round is retried: peers from memory.
    Drift,
    /// The periodic renewal check: peers from memory.
    Resync,
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    Drift,
    Retry,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Runs until `shutdown` completes (SIGTERM in the binary).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let settings = config
        .mesh
        .cluster(&config.cluster)
        .cloned()
        .ok_or_else(|| AgentError::UnknownCluster(config.cluster.clone()))?;
    let kube = match &config.kubeconfig {
        Some(path) => {
            meshtrust_kube::connect(&settings.name, Some(path), settings.context.as_deref()).await?
        }
        None => meshtrust_kube::connect_inferred(&settings.name).await?,
    };
    let health = Health::default();
    health.metrics().horizons().set_mesh_settings(&config.mesh);
    let server = health.listen(config.listen).await?;
    tracing::info!(addr = %server.local_addr(), cluster = %settings.name, "serving /healthz, /readyz and /metrics");

    let (tx, mut rx) = mpsc::channel::<Trigger>(64);
    tokio::spawn(watch_managed_secrets(
        kube.client.clone(),
        settings.istio_namespace.clone(),
        tx.clone(),
    ));

    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("meshtrust-agent-{}", std::process::id()));
    let elector = Elector::new(kube.client.clone(), &settings.istio_namespace, identity);
    let lease = LeaseTask::spawn(elector, health.clone());
    let mut leading = lease.leading.clone();
    let mut lease_alive = true;
    let mut agent = Agent {
        config,
        kube,
        health,
        session: None,
        last_index: None,
        rotation: RotationWatch::default(),
        last_warnings: Vec::new(),
        last_full: None,
        last_peer_read: None,
        cache: PublishedCache::default(),
        failures: 0,
        leader: false,
        last_failure: None,
        owed_bump: None,
    };
    let mut poll = tokio::time::interval(agent.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let ended = tokio::select! {
            _ = &mut shutdown => Ended::Stopped,
            changed = leading.changed(), if lease_alive => {
                // The Lease task ends only at shutdown; should it end early, this replica stops leading.
                lease_alive = changed.is_ok();
                let now_leading = lease_alive && *leading.borrow_and_update();
                if now_leading && !agent.leader {
                    let _ = tx.try_send(Trigger::Drift);
                }
                agent.leader = now_leading;
                Ended::Done(Ok(()))
            }
            _ = poll.tick(), if agent.leader => {
                let round = tracing::info_span!("round", cluster = %agent.config.cluster, trigger = "poll");
                let deadline = agent.config.round_deadline;
                let poll = async {
                    agent.poll().await;
                    Ok(())
                };
                bounded(poll.instrument(round), deadline, shutdown.as_mut(), &mut leading).await
            }
            Some(trigger) = rx.recv() => {
                if !agent.leader {
                    // Followers only watch; the leader writes.
                    continue;
                }
                // Coalesce a burst of events (our own writes echo back too) into one round.
                while rx.try_recv().is_ok() {}
                tracing::debug!(?trigger, "reconcile");
                let round = tracing::info_span!("round", cluster = %agent.config.cluster, ?trigger);
                let deadline = agent.config.round_deadline;
                bounded(agent.reconcile(Round::Drift).instrument(round), deadline, shutdown.as_mut(), &mut leading).await
            }
        };
        match ended {
            Ended::Stopped => break,
            Ended::Done(Ok(())) => {}
            // The Lease watch saw the loss inside the round, so the loop's own watch will not: mark it here, so
            // that regaining the Lease starts a round at once.
            Ended::LostLead => agent.leader = false,
            Ended::Done(Err(())) => agent.retry_later(&tx),
            Ended::TimedOut => {
                agent.note_failure(&round_timeout(&agent.config));
                agent.retry_later(&tx);
            }
        }
    }
    tracing::info!("shutting down");
    lease.stop().await;
    if tokio::time::timeout(Duration::from_secs(1), server.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("health server connections still open at exit");
    }
    Ok(())
}

/// Whether a round's writes were only remote secrets in this cluster. They change nothing the rotation watch
/// reads, and each echoes back through the watch on managed Secrets, whose round observes anyway: looking again
/// at once would cost every agent a second observation (OpenBao and its API server) per peer's publication.
fn wrote_only_remote_secrets(plan: &meshtrust_core::plan::Plan) -> bool {
    plan.changes.iter().all(|c| {
        matches!(
            c.action,
            Action::SyncRemoteSecret { .. } | Action::DeleteRemoteSecret { .. }
        )
    })
}

/// How a round ended: it finished, ran past its deadline, was cut short by SIGTERM, or lost the Lease.
enum Ended<T> {
    Done(T),
    TimedOut,
    Stopped,
    LostLead,
}

/// Runs one round under the agent's deadline; SIGTERM or a lost Lease abandons it at once. An abandoned round
/// has written only whole, conditional writes, so the next round starts from what is there.
async fn bounded<T>(
    round: impl Future<Output = T>,
    deadline: Duration,
    shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    leading: &mut watch::Receiver<bool>,
) -> Ended<T> {
    tokio::select! {
        result = tokio::time::timeout(deadline, round) => match result {
            Ok(value) => Ended::Done(value),
            Err(_) => Ended::TimedOut,
        },
        _ = shutdown => Ended::Stopped,
        _ = leading.wait_for(|l| !*l) => {
            tracing::warn!("lost the Lease during a round; abandoning it, the new leader carries on");
            Ended::LostLead
        }
    }
}

fn round_timeout(config: &AgentConfig) -> EngineError {
    EngineError::Port(PortError::new(
        System::Cluster(config.cluster.clone()),
        ErrorKind::Unavailable,
        "agent round",
        format!(
            "the round did not finish within its deadline of {} and was abandoned (OpenBao or the API server is \
             not answering); it is retried with backoff, and --round-timeout raises the deadline",
            meshtrust_core::duration::humanize(
                i64::try_from(config.round_deadline.as_secs()).unwrap_or(i64::MAX)
            )
        ),
    ))
}

/// Every change to a Secret meshtrust manages in the Istio namespace (edit or deletion) triggers a round.
async fn watch_managed_secrets(client: kube::Client, namespace: String, tx: mpsc::Sender<Trigger>) {
    // Metadata only: a change is all it needs to see, and a thousand Secrets' data would sit in every re-list.
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client, &namespace);
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let mut stream = watcher(api, watcher::Config::default().labels(&selector)).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                if tx.send(Trigger::Drift).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %meshtrust_kube::describe_watch(&e), "the watch on managed Secrets was interrupted; it resumes by itself");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A root rotation under way, as the last round saw it. Peers' progress arrives through the change marker; what
/// does not is watched here: the end of the dwell (a time) and the roots this cluster's istiod serves.
#[derive(Default)]
struct RotationWatch {
    pending: bool,
    /// When the dwell ends and the next phase may start.
    dwell_ends: Option<Instant>,
    /// The roots this cluster's istiod served (`istio-ca-root-cert`) at the last round.
    served: Option<Option<Vec<String>>>,
}

impl RotationWatch {
    fn after(snapshot: &Snapshot, config: &AgentConfig) -> RotationWatch {
        let pending = snapshot.rotation_pending();
        if !pending {
            return RotationWatch::default();
        }
        let dwell_ends = snapshot.dwell_left(&config.mesh).map(|left| {
            Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0).max(1))
        });
        RotationWatch {
            pending,
            dwell_ends,
            served: snapshot.facts().trust.served.get(&config.cluster).cloned(),
        }
    }

    fn due(&self) -> bool {
        self.dwell_ends.is_some_and(|t| Instant::now() >= t)
    }
}

struct Session {
    bao: OpenBaoClient,
    expires: Instant,
}

struct Agent {
    config: AgentConfig,
    kube: KubeCluster,
    health: Health,
    session: Option<Session>,
    /// The change marker's version whose changes are all reflected here.
    last_index: Option<u64>,
    /// What a root rotation under way waits for that moves no marker: the dwell's end, this istiod's reload.
    rotation: RotationWatch,
    /// The plan's warnings last logged: each is logged when it first appears, not on every poll.
    last_warnings: Vec<String>,
    last_full: Option<Instant>,
    /// When every peer's published entry was last read in full.
    last_peer_read: Option<Instant>,
    /// Peers' published entries across rounds: a round re-reads only those the marker names.
    cache: PublishedCache,
    failures: u32,
    leader: bool,
    /// The last failure reported at warn level; the same one again is logged at debug only.
    last_failure: Option<String>,
    /// A write of this agent landed but its bump of the change marker was lost: made at the next poll, since a
    /// round that finds nothing to write bumps nothing.
    owed_bump: Option<(String, Wrote)>,
}

impl Agent {
    /// A logged-in OpenBao client, logging in again when the token is past half its life.
    /// The engine for one round: this cluster only, with the agent's own OpenBao session.
    fn engine(&self, bao: OpenBaoClient) -> Engine {
        let clusters: BTreeMap<String, Arc<dyn Cluster>> = BTreeMap::from([(
            self.config.cluster.clone(),
            Arc::new(self.kube.clone()) as Arc<dyn Cluster>,
        )]);
        Engine::new(self.config.mesh.clone(), Arc::new(bao), clusters)
            .with_scope(Scope::Agent)
            .with_published_cache(self.cache.clone())
    }

    async fn bao(&mut self) -> Result<OpenBaoClient, EngineError> {
        if let Some(s) = &self.session
            && Instant::now() < s.expires
        {
            return Ok(s.bao.clone());
        }
        let mount = self
            .config
            .mesh
            .cluster(&self.config.cluster)
            .map(|c| c.auth_mount.clone())
            .unwrap_or_default();
        let (bao, ttl) = login(
            &self.config.openbao,
            &mount,
            &self.config.jwt,
            &self.kube.client,
        )
        .await?;
        tracing::info!(ttl, "logged in to OpenBao");
        let ttl_secs = i64::try_from(ttl).unwrap_or(i64::MAX);
        self.health
            .set_token_expiry(now().saturating_add(ttl_secs), ttl_secs);
        self.session = Some(Session {
            bao: bao.clone(),
            expires: Instant::now() + Duration::from_secs(ttl / 2),
        });
        Ok(bao)
    }

    /// One small read of the change marker. If it moved, the versions since the last one seen name who
    /// published, and a round re-reads just those; a periodic resync renews what falls due, and now and then
    /// re-reads every peer in case a hint was lost or forged.
    async fn poll(&mut self) {
        let resync_due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.config.resync_interval);
        let peers_due = self
            .last_peer_read
            .is_none_or(|t| t.elapsed() >= self.config.full_reread_interval);
        let engine = match self.bao().await {
            Ok(bao) => self.engine(bao),
            Err(e) => return self.note_failure(&e),
        };
        if let Some((cluster, wrote)) = self.owed_bump.clone() {
            match engine.bump_marker(&cluster, wrote).await {
                Ok(()) => self.owed_bump = None,
                Err(e) => return self.note_failure(&e),
            }
        }
        let current = match engine.index_version().await {
            Ok(v) => v,
            Err(e) => return self.note_failure(&e),
        };
        let moved = self.last_index != Some(current);
        if peers_due || self.last_index.is_none() {
            let _ = self.reconcile(Round::Full).await;
            return;
        }
        if moved {
            let seen = self.last_index.unwrap_or(0);
            match engine.changed_since(seen, current).await {
                Ok(Some(changed)) => self.cache.mark_changed(changed),
                Ok(None) => {
                    self.cache.mark_all_stale();
                    self.cache.mark_all_trust_stale();
                }
                Err(e) => return self.note_failure(&e),
            }
            let _ = self.reconcile(Round::Hinted { marker: current }).await;
        } else if resync_due || self.rotation.due() || self.served_changed().await {
            let _ = self.reconcile(Round::Resync).await;
        }
    }

    /// During a root rotation, whether this cluster's istiod now serves other roots than the last round saw:
    /// its reload is what the rotation waits for here, and it moves no marker and no watched Secret. One read
    /// of a ConfigMap from this cluster's API server; OpenBao is not asked.
    async fn served_changed(&self) -> bool {
        if !self.rotation.pending {
            return false;
        }
        let Some(settings) = self.config.mesh.cluster(&self.config.cluster) else {
            return false;
        };
        match served_roots(&self.kube, &settings.istio_namespace).await {
            Ok(served) => self.rotation.served.as_ref() != Some(&served),
            // The round reports the failure.
            Err(_) => true,
        }
    }

    async fn reconcile(&mut self, round: Round) -> Result<(), ()> {
        let started = Instant::now();
        if round == Round::Full {
            self.cache.mark_all_stale();
            // Peers' trust facts reach this agent through the marker; the periodic re-read covers a lost hint
            // only while they matter, during a rotation. A finished rotation is no reason to read them.
            if self.rotation.pending {
                self.cache.mark_all_trust_stale();
            }
        }
        let bao = match self.bao().await {
            Ok(b) => b,
            Err(e) => {
                self.note_failure(&e);
                return Err(());
            }
        };
        let engine = self.engine(bao);
        let health = self.health.clone();
        let mut progress = |change: &meshtrust_core::plan::Change,
                            applied: &meshtrust_engine::AppliedChange| {
            health.wrote(&change.action);
            tracing::info!(target = %change.target, resource = %change.resource, reason = %change.reason, detail = %applied.detail, "applied");
        };
        match engine
            .converge(&now, PlanOptions::default(), &mut progress)
            .await
        {
            Ok((plan, report, observation)) => {
                self.failures = 0;
                for warning in report
                    .warnings
                    .iter()
                    .filter(|w| !self.last_warnings.contains(w))
                {
                    tracing::warn!(%warning, "plan warning");
                }
                self.last_warnings = report.warnings.clone();
                if self.last_failure.take().is_some() {
                    tracing::info!("recovered: the round succeeded after failures");
                }
                self.last_full = Some(Instant::now());
                // The marker was read before the entries, so everything up to its version is reflected.
                match round {
                    Round::Full => {
                        self.last_index = Some(observation.index_version());
                        self.last_peer_read = Some(Instant::now());
                    }
                    Round::Hinted { marker } => self.last_index = Some(marker),
                    // A drift or resync round read no hints: what the marker says stays to be read.
                    Round::Drift | Round::Resync => {}
                }
                // An idle round already saw the current state; only a round that wrote looks again.
                let current = if report.applied.is_empty() || wrote_only_remote_secrets(&plan) {
                    Some(observation)
                } else {
                    engine.observe(now()).await.ok()
                };
                if let Some(current) = &current {
                    self.rotation = RotationWatch::after(current, &self.config);
                    self.record_observation(current);
                }
                self.health.success(now(), started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                self.note_failure(&e);
                Err(())
            }
        }
    }

    /// The gauges an observation sets: expiries of the intermediate and its root, and peers' remote secrets.
    fn record_observation(&self, current: &Snapshot) {
        let cluster = &self.config.cluster;
        if let Some(not_after) = current.intermediate_expiry(cluster) {
            self.health.set_expiry("cacerts", not_after);
        }
        if let Some(not_after) = current.signing_root_expiry(cluster) {
            self.health.set_expiry(ROOT_EXPIRY_LABEL, not_after);
        }
        self.health
            .metrics()
            .horizons()
            .set_peer_sync(&current.peer_sync(&self.config.mesh, cluster));
    }

    fn note_failure(&mut self, e: &EngineError) {
        if let EngineError::Port(p) = e
            && p.kind == ErrorKind::Denied
        {
            // The token may have been revoked or expired early: log in again next time.
            self.session = None;
        }
        if let EngineError::MarkerNotMoved { cluster, wrote, .. } = e {
            self.owed_bump = Some((cluster.clone(), *wrote));
        }
        self.failures += 1;
        // Whatever failed is retried in full at the next poll that reaches OpenBao.
        self.last_full = None;
        let message = e.to_string();
        if self.last_failure.as_deref() == Some(message.as_str()) {
            tracing::debug!(error = %message, failures = self.failures, "still failing; retrying");
        } else {
            tracing::warn!(error = %message, failures = self.failures, "reconcile failed; keeping the last good state and retrying");
        }
        self.last_failure = Some(message);
        self.health.failure(e);
    }

    /// Schedules a retry after the backoff for the failures so far.
    fn retry_later(&self, tx: &mpsc::Sender<Trigger>) {
        let delay = self.backoff();
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Trigger::Retry).await;
        });
    }

    /// Exponential backoff from 1 s to 60 s with ±20% jitter, so many agents do not retry in step.
    fn backoff(&self) -> Duration {
        let base = 2f64.powi(self.failures.min(6) as i32).min(60.0);
        let jitter = rand::rng().random_range(0.8..1.2);
        Duration::from_secs_f64(base * jitter)
    }
}

#[cfg(test)]
mod tests {
    use meshtrust_core::plan::{Change, Op, Plan, Target};

    use super::*;

    fn change(action: Action) -> Change {
        Change {
            target: Target::OpenBao,
            op: Op::Update,
            resource: String::new(),
            summary: String::new(),
            reason: String::new(),
            action,
        }
    }

    #[test]
    fn only_a_round_that_wrote_nothing_but_remote_secrets_skips_the_second_look() {
        let sync = change(Action::SyncRemoteSecret {
            cluster: "a".into(),
            peer: "b".into(),
        });
        let publish = change(Action::PublishRemoteSecret {
            cluster: "a".into(),
        });
        let plan = |changes: Vec<Change>| Plan {
            changes,
            ..Default::default()
        };
        assert!(wrote_only_remote_secrets(&plan(vec![sync.clone()])));
        assert!(!wrote_only_remote_secrets(&plan(vec![sync, publish])));
    }
}

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
use kube::runtime::watcher;
use meshtrust_bao::OpenBaoClient;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::{Cluster, ErrorKind};
use meshtrust_engine::{Engine, EngineError, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Scope};
use meshtrust_kube::KubeCluster;
use rand::Rng;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::lease::Elector;
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
    /// OpenBao without a token; the agent logs in for its own.
    pub openbao: OpenBaoClient,
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
    let mut lead = tokio::time::interval(Elector::interval());
    let mut agent = Agent {
        config,
        kube,
        health,
        session: None,
        last_index: None,
        rotating: false,
        last_warnings: Vec::new(),
        last_full: None,
        failures: 0,
        leader: false,
        last_failure: None,
    };
    let mut poll = tokio::time::interval(agent.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                if agent.leader {
                    elector.release().await;
                }
                server.shutdown().await;
                return Ok(());
            }
            _ = lead.tick() => {
                let leading = match elector.try_lead().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the Lease; not leading until it can");
                        false
                    }
                };
                if !leading {
                    agent.health.set_leader(false);
                }
                if leading != agent.leader {
                    tracing::info!(leading, "leadership changed");
                    agent.leader = leading;
                    agent.health.set_leader(leading);
                    if leading {
                        let _ = tx.try_send(Trigger::Drift);
                    }
                }
            }
            _ = poll.tick(), if agent.leader => {
                let round = tracing::info_span!("round", cluster = %agent.config.cluster, trigger = "poll");
                agent.poll().instrument(round).await
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
                if agent.reconcile().instrument(round).await.is_err() {
                    let delay = agent.backoff();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Trigger::Retry).await;
                    });
                }
            }
        }
    }
}

/// Every change to a Secret meshtrust manages in the Istio namespace (edit or deletion) triggers a round.
async fn watch_managed_secrets(client: kube::Client, namespace: String, tx: mpsc::Sender<Trigger>) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
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
                tracing::warn!(error = %e, "watch interrupted; it resumes by itself");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
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
    last_index: Option<u64>,
    /// A root rotation is under way: reconcile on every poll, since peers' progress does not move the index.
    rotating: bool,
    /// The plan's warnings last logged: each is logged when it first appears, not on every poll.
    last_warnings: Vec<String>,
    last_full: Option<Instant>,
    failures: u32,
    leader: bool,
    /// The last failure reported at warn level; the same one again is logged at debug only.
    last_failure: Option<String>,
}

impl Agent {
    /// A logged-in OpenBao client, logging in again when the token is past half its life.
    /// The engine for one round: this cluster only, with the agent's own OpenBao session.
    fn engine(&self, bao: OpenBaoClient) -> Engine {
        let clusters: BTreeMap<String, Arc<dyn Cluster>> = BTreeMap::from([(
            self.config.cluster.clone(),
            Arc::new(self.kube.clone()) as Arc<dyn Cluster>,
        )]);
        Engine::new(self.config.mesh.clone(), Arc::new(bao), clusters).with_scope(Scope::Agent)
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
        self.health
            .set_token_expiry(now().saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
        self.session = Some(Session {
            bao: bao.clone(),
            expires: Instant::now() + Duration::from_secs(ttl / 2),
        });
        Ok(bao)
    }

    /// One cheap read of the change index; a full round only if it moved or a resync is due.
    async fn poll(&mut self) {
        let due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.config.resync_interval);
        let moved = match self.bao().await {
            Ok(bao) => match self.engine(bao).index_version().await {
                Ok(version) => self.last_index != Some(version) || self.rotating,
                Err(e) => {
                    self.note_failure(&e);
                    return;
                }
            },
            Err(e) => {
                self.note_failure(&e);
                return;
            }
        };
        if moved || due {
            let _ = self.reconcile().await;
        }
    }

    async fn reconcile(&mut self) -> Result<(), ()> {
        let started = Instant::now();
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
            Ok((_, report, observation)) => {
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
                // An idle round already saw the current state; only a round that wrote looks again.
                let current = if report.applied.is_empty() {
                    Some(observation)
                } else {
                    engine.observe(now()).await.ok()
                };
                if let Some(current) = &current {
                    self.last_index = Some(current.index_version());
                    self.rotating = current.rotation_pending();
                }
                if let Some(not_after) = current
                    .as_ref()
                    .and_then(|c| c.intermediate_expiry(&self.config.cluster))
                {
                    self.health.set_expiry("cacerts", not_after);
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

    fn note_failure(&mut self, e: &EngineError) {
        if let EngineError::Port(p) = e
            && p.kind == ErrorKind::Denied
        {
            // The token may have been revoked or expired early: log in again next time.
            self.session = None;
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

    /// Exponential backoff from 1 s to 60 s with ±20% jitter, so many agents do not retry in step.
    fn backoff(&self) -> Duration {
        let base = 2f64.powi(self.failures.min(6) as i32).min(60.0);
        let jitter = rand::rng().random_range(0.8..1.2);
        Duration::from_secs_f64(base * jitter)
    }
}

//! Leader election with a coordination.k8s.io Lease, so that of several replicas only one writes. Every step is
//! a conditional write (create, or replace at the resourceVersion read): two candidates cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{oneshot, watch};

use crate::Health;

pub const LEASE_NAME: &str = "meshtrust-agent";
const LEASE_SECONDS: i32 = 10;

pub struct Elector {
    api: Api<Lease>,
    identity: String,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, identity: String) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity,
        }
    }

    /// How often a candidate should call [`Elector::try_lead`].
    pub fn interval() -> Duration {
        Duration::from_secs((LEASE_SECONDS / 3) as u64)
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Acquires, renews or takes over an expired lease. Returns whether this replica leads now.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec
            .renew_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
        let expired = holder.is_empty() || renewed + duration < now.as_second();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            self.spec(now, spec.acquire_time, transitions)
        } else if expired {
            self.spec(now, None, transitions + 1)
        } else {
            return Ok(false);
        };
        lease.spec = Some(next);
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands the lease back on shutdown so that another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = self
                .api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await;
        }
    }
}

/// The Lease kept in its own task, so that a long or hung round never lets it lapse: the main loop only reads
/// whether this replica leads.
pub struct LeaseTask {
    pub leading: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a release may take on shutdown; a hung API server must not hold up SIGTERM.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

impl LeaseTask {
    pub fn spawn(elector: Elector, health: Health) -> LeaseTask {
        let (tx, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep(elector, health, tx, stopped));
        LeaseTask {
            leading,
            stop,
            task,
        }
    }

    /// Stops renewing and hands the Lease back (bounded by [`RELEASE_TIMEOUT`]).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(RELEASE_TIMEOUT + Duration::from_secs(1), self.task).await;
    }
}

async fn keep(
    elector: Elector,
    health: Health,
    tx: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Elector::interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        // One attempt may take at most one interval; an API server that hangs costs leadership, never the loop.
        let attempt = tokio::time::timeout(Elector::interval(), elector.try_lead());
        let leading = tokio::select! {
            _ = &mut stopped => break,
            result = attempt => match result {
                Ok(Ok(leading)) => leading,
                Ok(Err(e)) => {
                    tracing::warn!(error = %meshtrust_kube::describe(&e), "cannot read or renew the Lease {LEASE_NAME}; not leading until it can");
                    false
                }
                Err(_) => {
                    tracing::warn!("the API server did not answer about the Lease {LEASE_NAME} within {}s; not leading until it does", Elector::interval().as_secs());
                    false
                }
            },
        };
        if !leading {
            health.set_leader(false);
        }
        if *tx.borrow() != leading {
            tracing::info!(leading, "leadership changed");
            health.set_leader(leading);
            tx.send_replace(leading);
        }
    }
    if *tx.borrow() {
        tx.send_replace(false);
        if tokio::time::timeout(RELEASE_TIMEOUT, elector.release())
            .await
            .is_err()
        {
            tracing::warn!(
                "the API server did not answer the release of the Lease {LEASE_NAME}; another replica takes over when it expires"
            );
        }
    }
}

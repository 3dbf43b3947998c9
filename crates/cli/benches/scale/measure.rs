//! The measurements both sides share: an idle window (memory, CPU, OpenBao traffic through the proxy) and the
//! propagation of a peer's new kubeconfig into the real cluster.

use std::time::Duration;

use meshtrust_bao::OpenBaoClient;

use crate::proxy::{CountingProxy, polls};
use crate::{cluster, peers, procfs};

/// Knobs, from the environment so that a quick run can shorten them.
pub struct Settings {
    pub idle_window: Duration,
    pub samples: usize,
    pub sync_limit: Duration,
    pub propagation_limit: Duration,
}

pub fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

impl Settings {
    pub fn from_env(default_idle: u64) -> Settings {
        Settings {
            idle_window: env_secs("MESHTRUST_SCALE_IDLE_SECS", default_idle),
            samples: std::env::var("MESHTRUST_SCALE_SAMPLES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20),
            sync_limit: env_secs("MESHTRUST_SCALE_SYNC_LIMIT_SECS", 300),
            propagation_limit: env_secs("MESHTRUST_SCALE_PROPAGATION_LIMIT_SECS", 120),
        }
    }
}

/// What an idle window measured.
pub struct Idle {
    pub window: Duration,
    pub rss_mib: f64,
    pub cpu_seconds: f64,
    pub polls: usize,
    pub requests: usize,
    pub response_bytes: u64,
}

impl Idle {
    pub fn requests_per_poll(&self) -> f64 {
        self.requests as f64 / self.polls.max(1) as f64
    }
    pub fn bytes_per_poll(&self) -> f64 {
        self.response_bytes as f64 / self.polls.max(1) as f64
    }
    pub fn requests_per_minute(&self) -> f64 {
        self.requests as f64 * 60.0 / self.window.as_secs_f64()
    }
}

/// Lets the process settle, then counts a window of idle traffic. Requests closer than 500 ms belong to one
/// poll, so the per-poll numbers do not depend on knowing the poll interval.
pub async fn idle(pid: u32, proxy: &CountingProxy, window: Duration) -> Idle {
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.reset();
    let cpu_before = procfs::cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let cpu_seconds = procfs::cpu_seconds(pid) - cpu_before;
    let (polls, requests, response_bytes) = polls(&proxy.hits(), Duration::from_millis(500));
    Idle {
        window,
        rss_mib: procfs::rss_mib(pid),
        cpu_seconds,
        polls,
        requests,
        response_bytes,
    }
}

/// `samples` times: a peer publishes generation `first_generation + s`, and the time until the real cluster's
/// Secret holds it. A sample past `limit` is recorded as `limit` (reported as "≥").
pub async fn propagation(
    bao: &OpenBaoClient,
    client: &kube::Client,
    namespace: &str,
    peer_count: usize,
    samples: usize,
    limit: Duration,
    first_generation: u64,
) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for s in 0..samples {
        let peer = peers::name(s % peer_count);
        let generation = first_generation + s as u64;
        // A spread of start times, so samples do not line up with the poll timer.
        tokio::time::sleep(Duration::from_millis(200 + (s as u64 * 373) % 1000)).await;
        peers::publish(bao, &peer, generation).await?;
        let want = peers::kubeconfig(&peer, generation);
        let took = cluster::wait_for_content(client, namespace, &peer, &want, limit).await;
        out.push(took.unwrap_or(limit));
    }
    Ok(out)
}

/// The `q` quantile (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

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

/// How to sample propagation.
pub struct Sampling {
    pub samples: usize,
    /// A sample past this is recorded as the limit itself (reported as "≥").
    pub limit: Duration,
    /// Generations written start here (each run its own range, so every write is a change).
    pub first_generation: u64,
    /// The period of the reader's timer (observed poll period, or the configured refresh).
    pub period: Duration,
}

/// An idle window's observed poll period (the window over the polls seen in it).
pub fn poll_period(idle: &Idle) -> Duration {
    idle.window / (idle.polls.max(1) as u32)
}

/// `samples` times: a peer publishes a new generation, and the time until the real cluster's Secret holds it.
pub async fn propagation(
    bao: &OpenBaoClient,
    client: &kube::Client,
    namespace: &str,
    peer_count: usize,
    sampling: &Sampling,
) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    let limit = sampling.limit;
    for s in 0..sampling.samples {
        let peer = peers::name(s % peer_count);
        let generation = sampling.first_generation + s as u64;
        // A sample ends just after the reader's timer fired; starting the next one at once would always land
        // at the same phase of that timer. A low-discrepancy delay over one period spreads the phases evenly.
        let phase = (s as f64 * 0.618_034).fract();
        tokio::time::sleep(Duration::from_millis(100) + sampling.period.mul_f64(phase)).await;
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

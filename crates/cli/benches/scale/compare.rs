//! meshtrust next to External Secrets Operator on the same 100 peers, the same API server and the same OpenBao.

use std::time::{Duration, Instant};

use meshtrust_testenv::TestEnv;
use serde::{Deserialize, Serialize};

use crate::measure::{self, Idle, Settings, quantile};
use crate::proxy::CountingProxy;
use crate::{agent, cluster, eso, peers};

/// One side of the comparison.
#[derive(Serialize, Deserialize, Clone)]
pub struct Side {
    pub name: String,
    #[serde(deserialize_with = "crate::nan_or")]
    pub sync_seconds: f64,
    #[serde(deserialize_with = "crate::nan_or")]
    pub rss_mib: f64,
    pub idle_window_seconds: f64,
    #[serde(deserialize_with = "crate::nan_or")]
    pub cpu_seconds_idle: f64,
    #[serde(deserialize_with = "crate::nan_or")]
    pub openbao_requests_per_idle_minute: f64,
    #[serde(deserialize_with = "crate::nan_or")]
    pub propagation_p50_s: f64,
    #[serde(deserialize_with = "crate::nan_or")]
    pub propagation_p99_s: f64,
    /// True when no sample arrived within the window: the percentiles are then lower bounds.
    pub propagation_at_least: bool,
}

fn side(name: &str, sync: Duration, idle: &Idle, samples: &[Duration], limit: Duration) -> Side {
    Side {
        name: name.to_string(),
        sync_seconds: sync.as_secs_f64(),
        rss_mib: idle.rss_mib,
        idle_window_seconds: idle.window.as_secs_f64(),
        cpu_seconds_idle: idle.cpu_seconds,
        openbao_requests_per_idle_minute: idle.requests_per_minute(),
        propagation_p50_s: quantile(samples, 0.5),
        propagation_p99_s: quantile(samples, 0.99),
        propagation_at_least: samples.iter().any(|s| *s >= limit),
    }
}

pub async fn run(count: usize, settings: &Settings) -> Result<Vec<Side>, String> {
    let (bin, crds) = eso::locate()?;
    let (env, mesh, proxy) = crate::setup(count).await?;
    let (run, agent) = agent::run(&env, &mesh, &proxy, count, settings, 1000).await?;
    // meshtrust stops before ESO starts, so the two do not share the CPU.
    drop(agent);
    let mut sides = vec![side(
        "meshtrust (defaults)",
        run.sync,
        &run.idle,
        &run.propagation,
        settings.propagation_limit,
    )];
    sides.extend(run_eso(&env, &proxy, &bin, &crds, count, settings).await?);
    Ok(sides)
}

async fn run_eso(
    env: &TestEnv,
    proxy: &CountingProxy,
    bin: &std::path::Path,
    crds: &std::path::Path,
    count: usize,
    settings: &Settings,
) -> Result<Vec<Side>, String> {
    let client = env.clusters[0].client().await.map_err(|e| e.to_string())?;
    eso::install_crds(&client, crds).await?;
    eso::secret_store(&client, &proxy.addr, &env.bao.root_token).await?;
    eso::external_secrets(&client, count, "1h").await?;
    let start = Instant::now();
    let controller = eso::start(env, bin);
    cluster::wait_for_count(&client, eso::NAMESPACE, count, settings.sync_limit)
        .await
        .ok_or_else(|| {
            format!(
                "ESO did not sync {count} secrets within {:?}; see {}",
                settings.sync_limit,
                env.dir().join("eso.log").display()
            )
        })?;
    let sync = start.elapsed();
    let bao = peers::root_client(&env.bao.addr, &env.bao.root_token);
    let hour = slow_side(
        &bao,
        &client,
        proxy,
        controller.pid(),
        sync,
        count,
        settings,
    )
    .await?;
    eso::external_secrets(&client, count, "10s").await?;
    // One full refresh cycle at the new interval before measuring.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let idle = measure::idle(controller.pid(), proxy, settings.idle_window).await;
    let limit = settings.propagation_limit;
    let samples = measure::propagation(
        &bao,
        &client,
        eso::NAMESPACE,
        count,
        &measure::Sampling {
            samples: settings.samples,
            limit,
            first_generation: 20_000,
            period: Duration::from_secs(10),
        },
    )
    .await?;
    Ok(vec![
        hour,
        side("ESO, refreshInterval 10s", sync, &idle, &samples, limit),
    ])
}

/// ESO at its default refreshInterval (1 h): idle cost, and one change that is not expected within the window.
async fn slow_side(
    bao: &meshtrust_bao::OpenBaoClient,
    client: &kube::Client,
    proxy: &CountingProxy,
    pid: u32,
    sync: Duration,
    count: usize,
    settings: &Settings,
) -> Result<Side, String> {
    let idle = measure::idle(pid, proxy, settings.idle_window).await;
    let window = measure::env_secs("MESHTRUST_ESO_WAIT_SECS", 60);
    let samples = measure::propagation(
        bao,
        client,
        eso::NAMESPACE,
        count,
        &measure::Sampling {
            samples: 1,
            limit: window,
            first_generation: 10_000,
            period: Duration::ZERO,
        },
    )
    .await?;
    Ok(side(
        "ESO, refreshInterval 1h (default)",
        sync,
        &idle,
        &samples,
        window,
    ))
}

/// The comparison table, with ESO's numbers as multiples of meshtrust's.
pub fn print(sides: &[Side]) {
    println!(
        "\nmeshtrust vs External Secrets Operator v0.16.2 (same peers, API server and OpenBao)\n"
    );
    println!(
        "{:<36} {:>9} {:>9} {:>12} {:>12} {:>10} {:>10}",
        "", "sync s", "RSS MiB", "CPU s idle", "req/idle min", "prop p50", "prop p99"
    );
    let Some(base) = sides.first() else { return };
    for s in sides {
        let ge = if s.propagation_at_least { "≥" } else { "" };
        println!(
            "{:<36} {:>9.2} {:>9.1} {:>12.2} {:>12.1} {:>10} {:>10}",
            s.name,
            s.sync_seconds,
            s.rss_mib,
            s.cpu_seconds_idle,
            s.openbao_requests_per_idle_minute,
            format!("{ge}{:.2}s", s.propagation_p50_s),
            format!("{ge}{:.2}s", s.propagation_p99_s)
        );
    }
    println!("\nratios (ESO / meshtrust):");
    for s in &sides[1..] {
        let ge = if s.propagation_at_least { "≥" } else { "" };
        println!(
            "{:<36} {:>9} {:>9} {:>12} {:>12} {:>10} {:>10}",
            s.name,
            ratio(s.sync_seconds, base.sync_seconds),
            ratio(s.rss_mib, base.rss_mib),
            ratio(s.cpu_seconds_idle, base.cpu_seconds_idle),
            ratio(
                s.openbao_requests_per_idle_minute,
                base.openbao_requests_per_idle_minute
            ),
            format!("{ge}{}", ratio(s.propagation_p50_s, base.propagation_p50_s)),
            format!("{ge}{}", ratio(s.propagation_p99_s, base.propagation_p99_s)),
        );
    }
}

pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.1}x", a / b)
    } else {
        "-".into()
    }
}

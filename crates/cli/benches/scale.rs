//! `cargo bench -p meshtrust --bench scale`: one real cluster (a real kube-apiserver) plus 10 / 100 / 1,000
//! simulated peers published in a real OpenBao, and a real `meshtrust agent` process (release build) for the
//! real cluster at its default settings. OpenBao traffic is counted by a counting proxy on loopback.
//!
//! - `MESHTRUST_SCALE_PEERS=10,100` measures a subset; `MESHTRUST_SCALE_IDLE_SECS`, `MESHTRUST_SCALE_SAMPLES`
//!   shorten the idle window and the propagation samples.
//! - `-- --eso`: meshtrust next to External Secrets Operator on 100 peers (`MESHTRUST_ESO_PEERS`), built by
//!   scripts/build-eso on first use. Idle window 300 s by default.
//! - `-- --plot`: only redraws docs/img/*.svg from the JSON results of earlier runs.
//!
//! Results go to `<target dir>/bench/scale.json` and `<target dir>/bench/eso.json` (the target dir is
//! CARGO_TARGET_DIR, or the workspace's `target/`).

#[path = "scale/agent.rs"]
mod agent;
#[path = "scale/cluster.rs"]
mod cluster;
#[path = "scale/compare.rs"]
mod compare;
#[path = "scale/eso.rs"]
mod eso;
#[path = "scale/measure.rs"]
mod measure;
#[path = "scale/peers.rs"]
mod peers;
#[path = "scale/plot.rs"]
mod plot;
#[path = "scale/procfs.rs"]
mod procfs;
#[path = "scale/proxy.rs"]
mod proxy;
#[path = "scale/rotation.rs"]
mod rotation;

use std::path::{Path, PathBuf};

use meshtrust_testenv::TestEnv;
use serde::{Deserialize, Serialize};

use measure::{Settings, quantile};
use proxy::CountingProxy;

/// One row of scale.json.
#[derive(Serialize, Deserialize, Clone)]
pub struct Row {
    pub peers: usize,
    /// A second root exists: the rotation is under way or done (`rotation` says which).
    #[serde(default)]
    pub rotated: bool,
    #[serde(default)]
    pub rotation: Option<String>,
    #[serde(deserialize_with = "nan_or")]
    pub sync_seconds: f64,
    #[serde(deserialize_with = "nan_or")]
    pub rss_mib: f64,
    #[serde(deserialize_with = "nan_or")]
    pub idle_requests_per_poll: f64,
    #[serde(deserialize_with = "nan_or")]
    pub idle_response_bytes_per_poll: f64,
    #[serde(deserialize_with = "nan_or")]
    pub propagation_p50_s: f64,
    #[serde(deserialize_with = "nan_or")]
    pub propagation_p99_s: f64,
    /// `meshtrust apply --openbao-only` for the mesh file of this many peers plus the real cluster.
    pub apply_openbao_only_seconds: Option<f64>,
    /// The OpenBao requests that apply made.
    #[serde(default)]
    pub apply_openbao_only_requests: Option<u64>,
    /// OpenBao requests of the cold start, of one publication (per agent), and of one periodic full re-read.
    #[serde(default)]
    pub sync_requests: Option<usize>,
    #[serde(default)]
    pub requests_per_publication: Option<f64>,
    #[serde(default)]
    pub full_reread_requests: Option<usize>,
    /// Why the row could not be measured, if it could not.
    pub error: Option<String>,
}

/// JSON has no NaN: serde_json writes an unmeasured number as null, and this reads it back as NaN.
pub fn nan_or<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn target_dir() -> PathBuf {
    // The bench runs as <target>/release/deps/scale-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn docs_img() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img")
}

/// A fresh real cluster and OpenBao, the counting proxy, the mesh file, OpenBao configured by the admin
/// (`apply --openbao-only`, timed) and `count` peers published.
pub async fn setup(count: usize) -> Result<(TestEnv, PathBuf, CountingProxy), String> {
    setup_timed(count, &mut None).await
}

/// As [`setup`]; `apply` gets the `apply --openbao-only` time as soon as it is known, also when a later step
/// fails.
async fn setup_timed(
    count: usize,
    apply: &mut Option<agent::Applied>,
) -> Result<(TestEnv, PathBuf, CountingProxy), String> {
    let env = TestEnv::builder()
        .clusters(1)
        .start()
        .map_err(|e| e.to_string())?;
    let proxy = CountingProxy::start(&env.bao.addr).await;
    let mesh = env.dir().join(format!("mesh-{count}.yaml"));
    std::fs::write(&mesh, peers::mesh_file(&env.clusters[0].kubeconfig, count))
        .map_err(|e| e.to_string())?;
    *apply = Some(agent::apply_openbao_only(&env, &mesh).await?);
    let bao = peers::root_client(&env.bao.addr, &env.bao.root_token);
    peers::publish_all(&bao, count).await?;
    Ok((env, mesh, proxy))
}

impl Row {
    fn new(peers: usize, rotation: Option<rotation::Stage>) -> Row {
        Row {
            peers,
            rotated: rotation.is_some(),
            rotation: rotation.map(|s| s.label().to_string()),
            sync_seconds: f64::NAN,
            rss_mib: f64::NAN,
            idle_requests_per_poll: f64::NAN,
            idle_response_bytes_per_poll: f64::NAN,
            propagation_p50_s: f64::NAN,
            propagation_p99_s: f64::NAN,
            apply_openbao_only_seconds: None,
            apply_openbao_only_requests: None,
            sync_requests: None,
            requests_per_publication: None,
            full_reread_requests: None,
            error: None,
        }
    }

    fn applied(&mut self, applied: &agent::Applied) {
        self.apply_openbao_only_seconds = Some(applied.seconds);
        self.apply_openbao_only_requests = applied.requests;
    }

    fn record(&mut self, run: Result<agent::AgentRun, String>) {
        match run {
            Ok(run) => {
                self.sync_seconds = run.sync.as_secs_f64();
                self.sync_requests = Some(run.sync_requests);
                self.requests_per_publication = Some(run.requests_per_publication);
                self.rss_mib = run.idle.rss_mib;
                self.idle_requests_per_poll = run.idle.requests_per_poll();
                self.idle_response_bytes_per_poll = run.idle.bytes_per_poll();
                self.propagation_p50_s = quantile(&run.propagation, 0.5);
                self.propagation_p99_s = quantile(&run.propagation, 0.99);
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// The rows for `count` peers: the mesh as set up, then (with `rotated`) with a root rotation under way and
/// after it, on the same servers. Each row starts its agent cold.
async fn scale_rows(count: usize, settings: &Settings, rotated: bool) -> Vec<Row> {
    let mut row = Row::new(count, None);
    let mut applied = None;
    let setup = setup_timed(count, &mut applied).await;
    if let Some(applied) = &applied {
        row.applied(applied);
    }
    let (env, mesh, proxy) = match setup {
        Ok(s) => s,
        Err(e) => {
            row.error = Some(e);
            return vec![row];
        }
    };
    // `MESHTRUST_SCALE_APPLY_ONLY=1`: only the admin's apply, for working on its time.
    if std::env::var_os("MESHTRUST_SCALE_APPLY_ONLY").is_some() {
        return vec![row];
    }
    let mut agent = None;
    match agent::run(&env, &mesh, &proxy, count, settings, 1000).await {
        Ok((run, guard)) => {
            row.record(Ok(run));
            // One periodic full re-read, counted with an agent that does one every 20 s.
            guard.stop();
            row.full_reread_requests = Some(agent::full_reread(&env, &mesh, &proxy).await);
            agent = Some(agent::start(&env, &mesh, &proxy.addr));
        }
        Err(e) => row.error = Some(e),
    }
    let mut rows = vec![row];
    if rotated && agent.is_some() {
        rows.extend(rotated_rows(&env, &mesh, &proxy, count, settings, &mut agent).await);
    }
    if let Some(agent) = agent {
        agent.stop();
    }
    rows
}

/// A rotation started on the running mesh, measured under way and once settled.
async fn rotated_rows(
    env: &TestEnv,
    mesh: &Path,
    proxy: &CountingProxy,
    count: usize,
    settings: &Settings,
    agent: &mut Option<agent::Guard>,
) -> Vec<Row> {
    let bao = peers::root_client(&env.bao.addr, &env.bao.root_token);
    let limit = settings.sync_limit;
    let mut rows = Vec::new();
    let roots = match rotation::start(env, mesh).await {
        Ok((roots, applied)) => {
            let mut row = Row::new(count, Some(rotation::Stage::UnderWay));
            row.applied(&applied);
            rows.push(row);
            roots
        }
        Err(e) => {
            let mut row = Row::new(count, Some(rotation::Stage::UnderWay));
            row.error = Some(e);
            return vec![row];
        }
    };
    rows.push(Row::new(count, Some(rotation::Stage::Settled)));
    for (index, stage) in [rotation::Stage::UnderWay, rotation::Stage::Settled]
        .into_iter()
        .enumerate()
    {
        eprintln!("measuring {count} peers, rotation {}", stage.label());
        let reached = async {
            rotation::publish(&bao, count, &roots, stage).await?;
            rotation::wait_for_agent(&bao, stage, limit).await?;
            if stage == rotation::Stage::Settled {
                let applied = agent::apply_openbao_only(env, mesh).await?;
                rows[index].applied(&applied);
            }
            Ok::<_, String>(())
        }
        .await;
        if let Err(e) = reached {
            rows[index].error = Some(e);
            break;
        }
        // The agent that carried the rotation so far stops (releasing its Lease); a cold one is measured.
        if let Some(running) = agent.take() {
            running.stop();
        }
        let first_generation = 2000 + 1000 * index as u64;
        let run = agent::run(env, mesh, proxy, count, settings, first_generation).await;
        rows[index].record(run.map(|(run, guard)| {
            *agent = Some(guard);
            run
        }));
    }
    rows
}

fn print_rows(rows: &[Row]) {
    println!(
        "\nmeshtrust agent at scale (one real cluster, simulated peers in a real OpenBao, release build)\n"
    );
    println!(
        "{:>6} {:>10} {:>9} {:>8} {:>10} {:>12} {:>9} {:>9} {:>12} {:>10}",
        "peers",
        "rotation",
        "sync s",
        "RSS MiB",
        "req/poll",
        "bytes/poll",
        "p50 s",
        "p99 s",
        "apply -ob s",
        "apply req"
    );
    for r in rows {
        let apply = r
            .apply_openbao_only_seconds
            .map_or("-".into(), |s| format!("{s:.2}"));
        let requests = r
            .apply_openbao_only_requests
            .map_or("-".into(), |n| n.to_string());
        println!(
            "{:>6} {:>10} {:>9.2} {:>8.1} {:>10.2} {:>12.0} {:>9.2} {:>9.2} {:>12} {:>10}",
            r.peers,
            r.rotation.as_deref().unwrap_or("none"),
            r.sync_seconds,
            r.rss_mib,
            r.idle_requests_per_poll,
            r.idle_response_bytes_per_poll,
            r.propagation_p50_s,
            r.propagation_p99_s,
            apply,
            requests
        );
        if let Some(e) = &r.error {
            println!("       {} peers: {e}", r.peers);
        }
    }
    println!("\nOpenBao requests of one agent, by cause\n");
    println!(
        "{:>6} {:>10} {:>11} {:>15} {:>15}",
        "peers", "rotation", "cold sync", "a publication", "full re-read"
    );
    let n = |v: Option<usize>| v.map_or("-".to_string(), |v| v.to_string());
    for r in rows {
        println!(
            "{:>6} {:>10} {:>11} {:>15} {:>15}",
            r.peers,
            r.rotation.as_deref().unwrap_or("none"),
            n(r.sync_requests),
            r.requests_per_publication
                .map_or("-".to_string(), |v| format!("{v:.1}")),
            n(r.full_reread_requests),
        );
    }
}

fn write_json<T: Serialize>(name: &str, value: &T) -> PathBuf {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("bench output dir");
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("json"))
        .expect("write results");
    println!("\nwrote {}", path.display());
    path
}

fn read_json<T: for<'a> Deserialize<'a>>(name: &str) -> Option<T> {
    let text = std::fs::read_to_string(target_dir().join("bench").join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

#[derive(Serialize, Deserialize)]
struct EsoResult {
    peers: usize,
    sides: Vec<compare::Side>,
}

fn redraw() {
    let rows: Vec<Row> = read_json("scale.json").unwrap_or_default();
    let eso: Option<EsoResult> = read_json("eso.json");
    let (sides, peers) = eso.map(|e| (e.sides, e.peers)).unwrap_or((Vec::new(), 100));
    match plot::draw(&docs_img(), &rows, &sides, peers) {
        Ok(()) => println!("drew {}/{{propagation,memory}}.svg", docs_img().display()),
        Err(e) => eprintln!("could not draw the plots: {e}"),
    }
}

/// The peer counts also measured with a rotated mesh (`MESHTRUST_SCALE_ROTATED_PEERS`, default 1000; empty for
/// none).
fn rotated_counts() -> Vec<usize> {
    std::env::var("MESHTRUST_SCALE_ROTATED_PEERS")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn peer_counts() -> Vec<usize> {
    std::env::var("MESHTRUST_SCALE_PEERS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--plot") {
        redraw();
        return;
    }
    if args.iter().any(|a| a == "--eso") {
        let count = std::env::var("MESHTRUST_ESO_PEERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        match compare::run(count, &Settings::from_env(300)).await {
            Ok(sides) => {
                compare::print(&sides);
                write_json(
                    "eso.json",
                    &EsoResult {
                        peers: count,
                        sides,
                    },
                );
            }
            Err(e) => eprintln!("the ESO comparison could not run: {e}"),
        }
        redraw();
        return;
    }
    let settings = Settings::from_env(30);
    let mut rows = Vec::new();
    let rotated = rotated_counts();
    for count in peer_counts() {
        eprintln!("measuring {count} peers");
        rows.extend(scale_rows(count, &settings, rotated.contains(&count)).await);
    }
    print_rows(&rows);
    // An apply-only run measures one column: it must not replace the full results or the pictures drawn from them.
    if std::env::var_os("MESHTRUST_SCALE_APPLY_ONLY").is_some() {
        return;
    }
    write_json("scale.json", &rows);
    redraw();
}

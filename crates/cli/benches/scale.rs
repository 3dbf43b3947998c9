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

use std::path::{Path, PathBuf};

use meshtrust_testenv::TestEnv;
use serde::{Deserialize, Serialize};

use measure::{Settings, quantile};
use proxy::CountingProxy;

/// One row of scale.json.
#[derive(Serialize, Deserialize, Clone)]
pub struct Row {
    pub peers: usize,
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
    apply: &mut Option<f64>,
) -> Result<(TestEnv, PathBuf, CountingProxy), String> {
    let env = TestEnv::builder()
        .clusters(1)
        .start()
        .map_err(|e| e.to_string())?;
    let proxy = CountingProxy::start(&env.bao.addr).await;
    let mesh = env.dir().join(format!("mesh-{count}.yaml"));
    std::fs::write(&mesh, peers::mesh_file(&env.clusters[0].kubeconfig, count))
        .map_err(|e| e.to_string())?;
    *apply = Some(agent::apply_openbao_only(&env, &mesh)?.as_secs_f64());
    let bao = peers::root_client(&env.bao.addr, &env.bao.root_token);
    peers::publish_all(&bao, count).await?;
    Ok((env, mesh, proxy))
}

async fn scale_row(count: usize, settings: &Settings) -> Row {
    let mut row = Row {
        peers: count,
        sync_seconds: f64::NAN,
        rss_mib: f64::NAN,
        idle_requests_per_poll: f64::NAN,
        idle_response_bytes_per_poll: f64::NAN,
        propagation_p50_s: f64::NAN,
        propagation_p99_s: f64::NAN,
        apply_openbao_only_seconds: None,
        error: None,
    };
    let result = async {
        let (env, mesh, proxy) = setup_timed(count, &mut row.apply_openbao_only_seconds).await?;
        agent::run(&env, &mesh, &proxy, count, settings).await
    }
    .await;
    match result {
        Ok(run) => {
            row.sync_seconds = run.sync.as_secs_f64();
            row.rss_mib = run.idle.rss_mib;
            row.idle_requests_per_poll = run.idle.requests_per_poll();
            row.idle_response_bytes_per_poll = run.idle.bytes_per_poll();
            row.propagation_p50_s = quantile(&run.propagation, 0.5);
            row.propagation_p99_s = quantile(&run.propagation, 0.99);
        }
        Err(e) => row.error = Some(e),
    }
    row
}

fn print_rows(rows: &[Row]) {
    println!(
        "\nmeshtrust agent at scale (one real cluster, simulated peers in a real OpenBao, release build)\n"
    );
    println!(
        "{:>6} {:>9} {:>8} {:>10} {:>12} {:>9} {:>9} {:>12}",
        "peers", "sync s", "RSS MiB", "req/poll", "bytes/poll", "p50 s", "p99 s", "apply -ob s"
    );
    for r in rows {
        let apply = r
            .apply_openbao_only_seconds
            .map_or("-".into(), |s| format!("{s:.2}"));
        println!(
            "{:>6} {:>9.2} {:>8.1} {:>10.2} {:>12.0} {:>9.2} {:>9.2} {:>12}",
            r.peers,
            r.sync_seconds,
            r.rss_mib,
            r.idle_requests_per_poll,
            r.idle_response_bytes_per_poll,
            r.propagation_p50_s,
            r.propagation_p99_s,
            apply
        );
        if let Some(e) = &r.error {
            println!("       {} peers: {e}", r.peers);
        }
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
    for count in peer_counts() {
        eprintln!("measuring {count} peers");
        rows.push(scale_row(count, &settings).await);
    }
    print_rows(&rows);
    write_json("scale.json", &rows);
    redraw();
}

//! `cargo bench -p meshtrust --bench agents`: a mesh of many real `meshtrust agent` processes (50 by default),
//! each the agent of its own cluster (its own Istio namespace on one of a few real API servers: see
//! `agents/fleet.rs` for why that is faithful), against one OpenBao and once against a 3-node Raft cluster.
//!
//! Measures mesh-wide propagation (one cluster publishes; the time until every other cluster holds it), OpenBao's
//! requests per second and CPU while every agent idles, and a root rotation the agents carry alone (short
//! dwell), with every cluster's trust sampled throughout.
//!
//! - `MESHTRUST_AGENTS=10,50` agent counts (default 50); `MESHTRUST_AGENTS_APISERVERS` (default 2);
//!   `MESHTRUST_AGENTS_STORES=openbao,openbao-raft` (default both); `MESHTRUST_AGENTS_IDLE_SECS` (30);
//!   `MESHTRUST_AGENTS_SAMPLES` (10).
//! - Results go to `<target dir>/bench/agents.json` and `docs/img/agents.svg`; `-- --plot` only redraws the
//!   picture from the last JSON.

#[path = "agents/fleet.rs"]
mod fleet;
#[path = "agents/measure.rs"]
mod measure;
#[path = "scale/procfs.rs"]
mod procfs;
// Shared with the scale benchmark, which reads every counter; here only requests and bytes are used.
#[allow(dead_code)]
#[path = "scale/proxy.rs"]
mod proxy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};
use meshtrust_testenv::TestEnv;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// The dwell of the benchmark's rotation.
const DWELL_SECS: u64 = 10;

/// One row of agents.json.
#[derive(Serialize, Deserialize, Clone)]
pub struct Row {
    pub agents: usize,
    /// `openbao` (one server) or `openbao-raft` (3 nodes).
    pub store: String,
    pub api_servers: usize,
    pub propagation_p50_s: Option<f64>,
    pub propagation_p99_s: Option<f64>,
    pub rotation_seconds: Option<f64>,
    pub rotation_gaps: Option<usize>,
    pub rotation_samples: Option<usize>,
    pub openbao_idle_requests_per_s: Option<f64>,
    pub openbao_idle_cpu_percent: Option<f64>,
    pub openbao_idle_response_bytes_per_s: Option<f64>,
    /// Mean resident memory of one agent at the end of the idle window.
    pub agent_rss_mib_mean: Option<f64>,
    /// The first `meshtrust apply` of the whole mesh.
    pub apply_seconds: Option<f64>,
    pub error: Option<String>,
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn quantile(samples: &[Duration], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

/// Where the store is reached, its root token and its processes.
struct Store {
    addr: String,
    token: String,
    pids: Vec<u32>,
}

fn store(env: &TestEnv, raft: bool) -> Result<Store, String> {
    if raft {
        let ha = env.bao_ha.as_ref().ok_or("no Raft cluster was started")?;
        return Ok(Store {
            addr: ha.addrs()[0].clone(),
            token: ha.root_token.clone(),
            pids: ha.pids(),
        });
    }
    Ok(Store {
        addr: env.bao.addr.clone(),
        token: env.bao.root_token.clone(),
        pids: env.bao.pid().into_iter().collect(),
    })
}

fn root_client(store: &Store) -> Result<OpenBaoClient, String> {
    OpenBaoClient::new(OpenBaoConfig {
        address: store.addr.clone(),
        token: store.token.clone(),
        namespace: None,
        ca_cert_pem: None,
        allow_insecure_http: false,
        addresses: vec![],
    })
    .map_err(|e| e.to_string())
}

async fn measure_row(row: &mut Row, raft: bool) -> Result<(), String> {
    let servers = row.api_servers;
    let mut builder = TestEnv::builder().clusters(servers);
    if raft {
        builder = builder.openbao_ha();
    }
    let env = builder.start().map_err(|e| e.to_string())?;
    let store = store(&env, raft)?;
    let proxy = proxy::CountingProxy::start(&store.addr).await;
    let members = fleet::members(row.agents, servers);
    let mesh = env.dir().join("mesh.yaml");
    std::fs::write(&mesh, fleet::mesh_file(&env, &members, DWELL_SECS))
        .map_err(|e| e.to_string())?;
    row.apply_seconds =
        Some(fleet::admin(&mesh, &store.addr, &store.token, &["apply"])?.as_secs_f64());
    let agents = fleet::start_agents(&env, &members, &mesh, &proxy.addr).await?;
    fleet::wait_ready(&agents, Duration::from_secs(600)).await?;
    let idle_window = Duration::from_secs(env_num("MESHTRUST_AGENTS_IDLE_SECS", 30));
    // Let the start-up rounds finish before the window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = measure::idle(&proxy, &store.pids, idle_window).await;
    row.openbao_idle_requests_per_s = Some(idle.requests_per_s);
    row.openbao_idle_cpu_percent = Some(idle.cpu_percent);
    row.openbao_idle_response_bytes_per_s = Some(idle.response_bytes_per_s);
    let pids = agents.pids();
    row.agent_rss_mib_mean =
        Some(pids.iter().map(|p| procfs::rss_mib(*p)).sum::<f64>() / pids.len().max(1) as f64);
    let mut clients = Vec::new();
    for c in &env.clusters {
        clients.push(c.client().await.map_err(|e| e.to_string())?);
    }
    let bao = root_client(&store)?;
    let samples = env_num("MESHTRUST_AGENTS_SAMPLES", 10) as usize;
    let took =
        measure::propagation(&bao, &clients, &members, samples, Duration::from_secs(60)).await?;
    row.propagation_p50_s = quantile(&took, 0.5);
    row.propagation_p99_s = quantile(&took, 0.99);
    let start = || {
        fleet::admin(
            &mesh,
            &store.addr,
            &store.token,
            &["ca", "rotate-root", "--start"],
        )
    };
    let rotation = measure::rotation(start, &clients, &members, Duration::from_secs(900)).await?;
    row.rotation_seconds = Some(rotation.seconds);
    row.rotation_gaps = Some(rotation.gaps);
    row.rotation_samples = Some(rotation.samples);
    drop(agents);
    Ok(())
}

fn print_rows(rows: &[Row]) {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!("\nmany real agents (each its own cluster), release build\n");
    println!(
        "{:>6} {:>13} {:>8} {:>8} {:>11} {:>6} {:>12} {:>12} {:>9}",
        "agents",
        "store",
        "p50 s",
        "p99 s",
        "rotation s",
        "gaps",
        "idle req/s",
        "idle CPU %",
        "apply s"
    );
    for r in rows {
        println!(
            "{:>6} {:>13} {:>8} {:>8} {:>11} {:>6} {:>12} {:>12} {:>9}",
            r.agents,
            r.store,
            f(r.propagation_p50_s),
            f(r.propagation_p99_s),
            f(r.rotation_seconds),
            r.rotation_gaps.map_or("-".into(), |g| g.to_string()),
            f(r.openbao_idle_requests_per_s),
            f(r.openbao_idle_cpu_percent),
            f(r.apply_seconds),
        );
        if let Some(e) = &r.error {
            println!("       {} agents, {}: {e}", r.agents, r.store);
        }
    }
}

fn target_dir() -> PathBuf {
    // The bench runs as <target>/release/deps/agents-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A plotted value: its name, how it is read from a row, its colour.
type Series = (&'static str, fn(&Row) -> Option<f64>, RGBColor);

/// docs/img/agents.svg: mesh-wide propagation and OpenBao's idle CPU against the number of agents, per store.
fn plot(rows: &[Row]) -> Result<PathBuf, String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/agents.svg");
    draw(&file, rows)?;
    Ok(file)
}

fn draw(file: &Path, rows: &[Row]) -> Result<(), String> {
    let root = SVGBackend::new(file, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let x_max = rows.iter().map(|r| r.agents).max().unwrap_or(50) as f64 * 1.2;
    let y_max = rows
        .iter()
        .flat_map(|r| {
            [
                r.propagation_p99_s,
                r.openbao_idle_cpu_percent.map(|c| c / 10.0),
            ]
        })
        .flatten()
        .fold(3.0f64, f64::max)
        * 1.15;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Many real agents: propagation and OpenBao CPU at idle",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("agents (each its own cluster)")
        .y_desc("seconds  |  OpenBao CPU % / 10")
        .draw()
        .map_err(|e| e.to_string())?;
    let series: [Series; 3] = [
        (
            "propagation p50",
            |r| r.propagation_p50_s,
            RGBColor(31, 119, 180),
        ),
        (
            "propagation p99 (slowest cluster)",
            |r| r.propagation_p99_s,
            RGBColor(44, 160, 44),
        ),
        (
            "OpenBao CPU % at idle / 10",
            |r| r.openbao_idle_cpu_percent.map(|c| c / 10.0),
            RGBColor(214, 39, 40),
        ),
    ];
    for store in ["openbao", "openbao-raft"] {
        for (name, value, color) in &series {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.store == store && r.error.is_none())
                .filter_map(|r| Some((r.agents as f64, value(r)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let color = *color;
            let raft = store == "openbao-raft";
            let label = format!("{name}, {store}");
            c.draw_series(points.iter().map(move |p| {
                if raft {
                    TriangleMarker::new(*p, 7, color.filled()).into_dyn()
                } else {
                    Circle::new(*p, 5, color.filled()).into_dyn()
                }
            }))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
        }
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `-- --plot`: only redraw docs/img/agents.svg from the last agents.json.
    if std::env::args().any(|a| a == "--plot") {
        let rows: Vec<Row> = std::fs::read_to_string(target_dir().join("bench/agents.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        match plot(&rows) {
            Ok(file) => println!("drew {}", file.display()),
            Err(e) => eprintln!("could not draw the plot: {e}"),
        }
        return;
    }
    let servers = env_num("MESHTRUST_AGENTS_APISERVERS", 2) as usize;
    let mut rows = Vec::new();
    for count in env_list("MESHTRUST_AGENTS", "50") {
        let Ok(agents) = count.parse::<usize>() else {
            eprintln!("MESHTRUST_AGENTS: {count:?} is not a number");
            continue;
        };
        for store in env_list("MESHTRUST_AGENTS_STORES", "openbao,openbao-raft") {
            eprintln!("measuring {agents} agents against {store}");
            let mut row = Row {
                agents,
                store: store.clone(),
                api_servers: servers,
                propagation_p50_s: None,
                propagation_p99_s: None,
                rotation_seconds: None,
                rotation_gaps: None,
                rotation_samples: None,
                openbao_idle_requests_per_s: None,
                openbao_idle_cpu_percent: None,
                openbao_idle_response_bytes_per_s: None,
                agent_rss_mib_mean: None,
                apply_seconds: None,
                error: None,
            };
            if let Err(e) = measure_row(&mut row, store == "openbao-raft").await {
                row.error = Some(e);
            }
            rows.push(row);
        }
    }
    print_rows(&rows);
    let dir = target_dir().join("bench");
    let written = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_string_pretty(&rows).map_err(|e| e.to_string()))
        .and_then(|json| std::fs::write(dir.join("agents.json"), json).map_err(|e| e.to_string()));
    match written {
        Ok(()) => println!("\nwrote {}", dir.join("agents.json").display()),
        Err(e) => eprintln!("could not write agents.json: {e}"),
    }
    match plot(&rows) {
        Ok(file) => println!("drew {}", file.display()),
        Err(e) => eprintln!("could not draw the plot: {e}"),
    }
}

//! Kill anywhere: `meshtrust apply` (the real binary) or an agent is SIGKILLed at a random moment during first
//! bootstrap, renewal, a root rotation phase, publishing (token refresh) or peer removal. After every kill a re-run
//! converges, and then the mesh is checked from outside: exactly the intended roots in OpenBao, every `cacerts`
//! key matching its certificate, every pair of clusters trusting each other's issuer, every remote secret present
//! and current, and `meshtrust verify` passing.
//!
//! Short version (CI): `cargo test -p meshtrust --test chaos -- --nocapture` (10 runs).
//! Long version: `MESHTRUST_CHAOS_RUNS=100 cargo test -p meshtrust --test chaos -- --nocapture`.
//! Replay a failure: `MESHTRUST_CHAOS_SEED=<seed printed by the failing run>` (with the same run count).
#![allow(clippy::too_many_lines)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use meshtrust_testenv::{TestEnv, dying_with_owner, mesh_file_with};
use support::{Mesh, field, openssl_pubkey};

/// Intermediates live an hour; the base file renews 10 minutes ahead, the renewal file 3599 s ahead (due after
/// a second). Reader tokens live 10 minutes; the publishing file refreshes 599 s ahead (due after a second).
const BASE: &str = "ca:\n  intermediate:\n    ttl: 1h\n    renewBefore: 10m\nremoteSecrets:\n  tokenTtl: 10m\n  refreshBefore: 60s\n";
const RENEW: &str = "ca:\n  intermediate:\n    ttl: 1h\n    renewBefore: 3599s\nremoteSecrets:\n  tokenTtl: 10m\n  refreshBefore: 60s\n";
const PUBLISH: &str = "ca:\n  intermediate:\n    ttl: 1h\n    renewBefore: 10m\nremoteSecrets:\n  tokenTtl: 10m\n  refreshBefore: 599s\n";

/// A small deterministic generator (xorshift64*), so a seed replays the same scenarios and kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Bootstrap,
    Renewal,
    Rotation,
    Publishing,
    PeerRemoval,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario::Bootstrap,
    Scenario::Renewal,
    Scenario::Rotation,
    Scenario::Publishing,
    Scenario::PeerRemoval,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Apply,
    Agent(usize),
}

/// The mesh files of one environment: the whole mesh with each scenario's timing, and the mesh without
/// cluster-b for peer removal.
struct Files {
    base: PathBuf,
    renew: PathBuf,
    publish: PathBuf,
    without_b: PathBuf,
}

impl Files {
    fn write(env: &TestEnv) -> Files {
        let dir = env.dir();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("mesh file");
            path
        };
        let base = mesh_file_with(env, BASE);
        let start = base.find("  - name: cluster-b").expect("cluster-b block");
        let end = base[start + 4..]
            .find("  - name: ")
            .map_or(base.len(), |i| start + 4 + i);
        let without_b = format!("{}{}", &base[..start], &base[end..]);
        Files {
            renew: write("renew.yaml", mesh_file_with(env, RENEW)),
            publish: write("publish.yaml", mesh_file_with(env, PUBLISH)),
            without_b: write("without-b.yaml", without_b),
            base: write("base.yaml", base),
        }
    }
}

struct Chaos {
    mesh: Mesh,
    files: Files,
    /// The newest root generation known to exist (a killed rotation may or may not have made the next one).
    roots: u32,
    /// Agent logs, one file per start, for a failure's post-mortem.
    agent_logs: usize,
}

fn meshtrust_cmd(mesh: &Mesh, file: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshtrust"));
    cmd.args(args)
        .arg("--mesh")
        .arg(file)
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env("BAO_TOKEN", &mesh.env.bao.root_token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Chaos {
    fn run(&self, file: &Path, args: &[&str]) -> Output {
        meshtrust_cmd(&self.mesh, file, args)
            .output()
            .expect("run meshtrust")
    }

    fn ok(&self, file: &Path, args: &[&str], context: &str) {
        let out = self.run(file, args);
        assert!(
            out.status.success(),
            "{context}: meshtrust {args:?} failed\n{}",
            text(&out)
        );
    }

    /// The re-run after a kill. On this loaded machine a run can fail on a transient error (a connection the
    /// server dropped); that is reported and run again, up to three times, and is no inconsistency.
    fn rerun(&self, file: &Path, args: &[&str], ctx: &str) {
        for attempt in 1..=3 {
            let out = self.run(file, args);
            if out.status.success() {
                return;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprintln!(
                "{ctx}: re-run {attempt} failed: {}",
                stderr.lines().last().unwrap_or_default()
            );
        }
        self.ok(file, args, ctx);
    }

    fn spawn(&self, file: &Path, args: &[&str]) -> Child {
        meshtrust_cmd(&self.mesh, file, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn meshtrust")
    }

    fn spawn_agent(&mut self, index: usize, file: &Path) -> Child {
        self.agent_logs += 1;
        let cluster = &self.mesh.env.clusters[index];
        let log = self
            .mesh
            .env
            .dir()
            .join(format!("agent-{}-{}.log", cluster.name, self.agent_logs));
        let log = std::fs::File::create(&log).expect("agent log");
        // The agent dies with the test even if the test is killed without unwinding.
        dying_with_owner(env!("CARGO_BIN_EXE_meshtrust"))
            .args(["agent", "--cluster", &cluster.name, "--token-request"])
            .args(["--poll-interval", "1s", "--listen", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg("--mesh")
            .arg(file)
            .env("BAO_ADDR", &self.mesh.env.bao.addr)
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent")
    }

    /// Brings the mesh to the state a scenario starts from; nothing here is killed. Every scenario but a first
    /// bootstrap starts settled (an empty plan, so no rotation is half done); a rotation run first takes
    /// `rotation_steps` unkilled steps, so the kill lands in phase 1, 2 or 3.
    fn setup(&mut self, scenario: Scenario, victim: Victim, rotation_steps: u64, ctx: &str) {
        let base = self.files.base.clone();
        if scenario != Scenario::Bootstrap {
            self.settle(&base, ctx);
        }
        match scenario {
            Scenario::Bootstrap => {
                self.wipe();
                self.roots = 0;
                if victim != Victim::Apply {
                    self.ok(&base, &["apply", "--openbao-only"], ctx);
                }
            }
            Scenario::Renewal => {
                // Due one second after issue under the renewal file.
                std::thread::sleep(Duration::from_millis(1500));
            }
            Scenario::Publishing => {
                std::thread::sleep(Duration::from_millis(1500));
            }
            Scenario::Rotation => {
                for _ in 0..rotation_steps {
                    self.ok(&base, &["ca", "rotate-root", "--step", "--skip-dwell"], ctx);
                }
                // The first step made the next root.
                self.roots += u32::from(rotation_steps > 0);
            }
            Scenario::PeerRemoval => {
                if victim != Victim::Apply {
                    // The admin unpublishes cluster-b; the agent's job is to follow.
                    let without_b = self.files.without_b.clone();
                    self.ok(&without_b, &["apply", "--openbao-only"], ctx);
                }
            }
        }
    }

    /// `apply` until the plan is empty (a rotation takes a round per phase).
    fn settle(&self, file: &Path, ctx: &str) {
        for _ in 0..5 {
            let out = self.run(file, &["apply", "--output", "json"]);
            assert!(
                out.status.success(),
                "{ctx}: settling apply failed\n{}",
                text(&out)
            );
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("apply JSON");
            if report["plan"]["changes"]
                .as_array()
                .is_some_and(Vec::is_empty)
            {
                return;
            }
        }
        panic!("{ctx}: the mesh did not settle in 5 applies");
    }

    /// A fresh OpenBao (dev mode keeps nothing) and no managed Secret in any cluster: a first bootstrap.
    fn wipe(&mut self) {
        self.mesh.env.bao.restart_empty().expect("fresh OpenBao");
        let rt = runtime();
        rt.block_on(async {
            for cluster in &self.mesh.env.clusters {
                let api: Api<Secret> =
                    Api::namespaced(cluster.client().await.expect("client"), "istio-system");
                let _ = api
                    .delete_collection(
                        &DeleteParams::default(),
                        &ListParams::default().labels("app.kubernetes.io/managed-by=meshtrust"),
                    )
                    .await;
            }
        });
    }

    fn op_file(&self, scenario: Scenario) -> PathBuf {
        match scenario {
            Scenario::Renewal => self.files.renew.clone(),
            Scenario::Publishing => self.files.publish.clone(),
            Scenario::PeerRemoval => self.files.without_b.clone(),
            Scenario::Bootstrap | Scenario::Rotation => self.files.base.clone(),
        }
    }

    /// The file the end state is checked against (the renewal and publishing files would call fresh
    /// certificates "due").
    fn check_file(&self, scenario: Scenario) -> PathBuf {
        if scenario == Scenario::PeerRemoval {
            self.files.without_b.clone()
        } else {
            self.files.base.clone()
        }
    }

    /// Starts the scenario's operation, SIGKILLs it after `delay`, re-runs until converged. Returns whether
    /// the kill hit a running process, and the time from the kill to a converged mesh.
    fn kill_and_recover(
        &mut self,
        scenario: Scenario,
        victim: Victim,
        delay: Duration,
        ctx: &str,
    ) -> (bool, Duration) {
        let file = self.op_file(scenario);
        match victim {
            Victim::Apply => {
                let args: &[&str] = if scenario == Scenario::Rotation {
                    &["ca", "rotate-root", "--step", "--skip-dwell"]
                } else {
                    &["apply"]
                };
                let mut child = self.spawn(&file, args);
                let hit = kill_after(&mut child, delay);
                let killed_at = Instant::now();
                // A killed rotation is resumed by the same command; everything else by `apply`.
                self.rerun(&file, args, ctx);
                (hit, killed_at.elapsed())
            }
            Victim::Agent(index) => {
                let clusters = if scenario == Scenario::PeerRemoval {
                    vec![0]
                } else {
                    vec![0, 1]
                };
                let mut agents: BTreeMap<usize, Child> = clusters
                    .iter()
                    .map(|&i| (i, self.spawn_agent(i, &file)))
                    .collect();
                let victim_child = agents.get_mut(&index).expect("victim agent");
                let hit = kill_after(victim_child, delay);
                let killed_at = Instant::now();
                // The re-run: every agent starts again with the file the end state is checked against (under
                // the renewal and publishing files there is always more to do, so no state would stay put).
                let check_file = self.check_file(scenario);
                for (i, child) in agents.iter_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                    *child = self.spawn_agent(*i, &check_file);
                }
                self.wait_verified(scenario, ctx);
                let recovered = killed_at.elapsed();
                for (_, mut child) in agents {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                (hit, recovered)
            }
        }
    }

    /// Polls `meshtrust verify` until it passes (agents converge on their own schedule).
    fn wait_verified(&self, scenario: Scenario, ctx: &str) {
        let file = self.check_file(scenario);
        let start = Instant::now();
        loop {
            let out = self.run(&file, &["verify"]);
            if out.status.success() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{ctx}: the agents did not converge within 120 s\n{}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Sleeps `delay`, then SIGKILLs the child. True if the child was still running (the kill hit it mid-work).
fn kill_after(child: &mut Child, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5).min(deadline - Instant::now()));
    }
    let alive = child.try_wait().ok().flatten().is_none();
    let _ = child.kill();
    let _ = child.wait();
    alive
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn seed() -> u64 {
    std::env::var("MESHTRUST_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        .max(1)
}

fn runs() -> usize {
    std::env::var("MESHTRUST_CHAOS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

#[derive(Default)]
struct Tally {
    runs: usize,
    hits: usize,
    recover_ms: Vec<u128>,
}

#[test]
fn killed_anywhere_the_mesh_converges_to_a_consistent_state() {
    let seed = seed();
    let total = runs();
    eprintln!(
        "chaos: seed {seed}, {total} runs (replay: MESHTRUST_CHAOS_SEED={seed} MESHTRUST_CHAOS_RUNS={total})"
    );
    let mesh = Mesh::start(2, BASE);
    let files = Files::write(&mesh.env);
    let mut chaos = Chaos {
        mesh,
        files,
        roots: 0,
        agent_logs: 0,
    };
    // The agents' identities, and istio-system, exist from the first apply on.
    let base = chaos.files.base.clone();
    chaos.ok(&base, &["apply"], "initial apply");
    runtime().block_on(async {
        for cluster in &chaos.mesh.env.clusters {
            cluster
                .create_login_service_account("istio-system", "meshtrust-agent")
                .await
                .expect("agent identity");
        }
    });
    chaos.roots = 1;
    let mut rng = Rng(seed);
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    for run in 1..=total {
        let scenario = SCENARIOS[(run - 1) % SCENARIOS.len()];
        let victim = if scenario == Scenario::Rotation || rng.below(2) == 0 {
            Victim::Apply
        } else {
            Victim::Agent(rng.below(if scenario == Scenario::PeerRemoval {
                1
            } else {
                2
            }) as usize)
        };
        // Measured here: a bootstrap apply takes 1.5-3.5 s, a rotation step about 1.5 s, the other applies
        // 0.2-0.8 s; agents do their work in the first seconds.
        let window = match (scenario, victim) {
            (_, Victim::Agent(_)) => 3000,
            (Scenario::Bootstrap, _) => 3000,
            (Scenario::Rotation, _) => 1500,
            _ => 600,
        };
        let delay = Duration::from_millis(rng.below(window));
        let rotation_steps = if scenario == Scenario::Rotation {
            rng.below(3)
        } else {
            0
        };
        let phase = if scenario == Scenario::Rotation {
            format!(" in phase {}", rotation_steps + 1)
        } else {
            String::new()
        };
        let ctx = format!(
            "run {run}/{total} (seed {seed}): {scenario:?}{phase}, kill {victim:?} after {} ms",
            delay.as_millis()
        );
        chaos.setup(scenario, victim, rotation_steps, &ctx);
        let (hit, recovered) = chaos.kill_and_recover(scenario, victim, delay, &ctx);
        check(&mut chaos, scenario, &ctx);
        eprintln!(
            "{ctx}: {} · consistent, recovered in {} ms",
            if hit {
                "killed while running"
            } else {
                "had already finished"
            },
            recovered.as_millis()
        );
        let entry = tally
            .entry(format!(
                "{scenario:?} / {}",
                if victim == Victim::Apply {
                    "apply"
                } else {
                    "agent"
                }
            ))
            .or_default();
        entry.runs += 1;
        entry.hits += usize::from(hit);
        entry.recover_ms.push(recovered.as_millis());
    }
    report(&tally);
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(tally: &BTreeMap<String, Tally>) {
    eprintln!(
        "| fault | runs | killed while running | inconsistent end states | recover p50 | recover p99 |"
    );
    eprintln!("|---|---|---|---|---|---|");
    for (name, t) in tally {
        let mut ms = t.recover_ms.clone();
        ms.sort_unstable();
        eprintln!(
            "| SIGKILL {name} | {} | {} | 0 | {:.1} s | {:.1} s |",
            t.runs,
            t.hits,
            percentile(&ms, 0.5) as f64 / 1000.0,
            percentile(&ms, 0.99) as f64 / 1000.0
        );
    }
}

/// The end state, checked from outside meshtrust (the `bao` CLI, openssl, the API servers).
fn check(chaos: &mut Chaos, scenario: Scenario, ctx: &str) {
    chaos.roots = check_roots(chaos, ctx);
    let clusters: Vec<usize> = if scenario == Scenario::PeerRemoval {
        vec![0]
    } else {
        vec![0, 1]
    };
    runtime().block_on(async {
        check_cacerts(chaos, &clusters, ctx).await;
        check_remote_secrets(chaos, &clusters, ctx).await;
    });
    let out = chaos.run(&chaos.check_file(scenario), &["verify"]);
    assert!(out.status.success(), "{ctx}: verify failed\n{}", text(&out));
}

fn bao_json(chaos: &Chaos, args: &[&str]) -> serde_json::Value {
    let out = chaos.mesh.env.bao.cli().args(args).output().expect("bao");
    assert!(out.status.success(), "bao {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("bao JSON")
}

/// Exactly the roots meshtrust meant to make: `meshtrust-root-1..=N`, N the roots known before the run or one
/// more (a killed rotation may or may not have made its root), one key each, no unnamed or duplicate issuer.
/// Returns N.
fn check_roots(chaos: &Chaos, ctx: &str) -> u32 {
    let ids = bao_json(chaos, &["list", "-format=json", "pki/issuers"]);
    let ids: Vec<String> = serde_json::from_value(ids).expect("issuer ids");
    let mut names = Vec::new();
    for id in &ids {
        let issuer = bao_json(
            chaos,
            &["read", "-format=json", &format!("pki/issuer/{id}")],
        );
        names.push(
            issuer["data"]["issuer_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    names.sort_by_key(|n| {
        n.strip_prefix("meshtrust-root-")
            .and_then(|g| g.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    let n = names.len() as u32;
    let expected: Vec<String> = (1..=n).map(|g| format!("meshtrust-root-{g}")).collect();
    assert_eq!(names, expected, "{ctx}: root issuers are not 1..=N");
    assert!(
        n == chaos.roots || n == chaos.roots + 1,
        "{ctx}: {n} roots, expected {} (or one more from a killed rotation)",
        chaos.roots
    );
    let keys: Vec<String> =
        serde_json::from_value(bao_json(chaos, &["list", "-format=json", "pki/keys"]))
            .expect("key ids");
    assert_eq!(
        keys.len(),
        ids.len(),
        "{ctx}: a key without its root issuer"
    );
    n
}

async fn cacerts_of(chaos: &Chaos, index: usize) -> Secret {
    let cluster = &chaos.mesh.env.clusters[index];
    read_retrying(|| async {
        let api: Api<Secret> = Api::namespaced(cluster.client().await.ok()?, "istio-system");
        api.get_opt("cacerts").await.ok()
    })
    .await
    .unwrap_or_else(|| panic!("cacerts missing in cluster {index}"))
}

/// A read by the checker, retried: on a loaded machine the API server may close a kept-alive connection just
/// as the checker reuses it, which says nothing about meshtrust.
async fn read_retrying<T, F, Fut>(mut read: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..10 {
        if let Some(v) = read().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("the checker could not read from the API server 10 times in a row");
}

async fn check_cacerts(chaos: &Chaos, clusters: &[usize], ctx: &str) {
    let mut bundles = Vec::new();
    for &i in clusters {
        let s = cacerts_of(chaos, i).await;
        assert_eq!(
            openssl_pubkey(&field(&s, "ca-key.pem"), false),
            openssl_pubkey(&field(&s, "ca-cert.pem"), true),
            "{ctx}: cluster {i}'s ca-key.pem does not match ca-cert.pem"
        );
        bundles.push(s);
    }
    // Every pair: j's intermediate (with its chain) verifies against i's root-cert.pem.
    for (i, trusting) in bundles.iter().enumerate() {
        for (j, signed) in bundles.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tmp");
            let roots = dir.path().join("roots.pem");
            let chain = dir.path().join("chain.pem");
            let cert = dir.path().join("cert.pem");
            std::fs::write(&roots, field(trusting, "root-cert.pem")).expect("write");
            std::fs::write(&chain, field(signed, "cert-chain.pem")).expect("write");
            std::fs::write(&cert, field(signed, "ca-cert.pem")).expect("write");
            let out = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&roots)
                .arg("-untrusted")
                .arg(&chain)
                .arg(&cert)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{ctx}: cluster {} does not trust cluster {}'s issuer: {}",
                clusters[i],
                clusters[j],
                text(&out)
            );
        }
    }
}

/// In every cluster, one managed remote secret per peer, holding exactly what OpenBao publishes for it.
async fn check_remote_secrets(chaos: &Chaos, clusters: &[usize], ctx: &str) {
    let names: Vec<String> = clusters
        .iter()
        .map(|&i| chaos.mesh.env.clusters[i].name.clone())
        .collect();
    for (&i, own) in clusters.iter().zip(&names) {
        let cluster = &chaos.mesh.env.clusters[i];
        let listed = read_retrying(|| async {
            let api: Api<Secret> = Api::namespaced(cluster.client().await.ok()?, "istio-system");
            api.list(&ListParams::default().labels("istio/multiCluster=true"))
                .await
                .ok()
        })
        .await;
        let mut found: BTreeMap<String, Secret> = listed
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
        for peer in names.iter().filter(|p| *p != own) {
            let name = format!("istio-remote-secret-{peer}");
            let secret = found
                .remove(&name)
                .unwrap_or_else(|| panic!("{ctx}: {own} lacks {name}"));
            let published = bao_json(
                chaos,
                &[
                    "kv",
                    "get",
                    "-format=json",
                    &format!("secret/istio/remote-secrets/{peer}"),
                ],
            );
            let want = published["data"]["data"][peer.as_str()]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let held = field(&secret, peer);
            // Compared, never printed: a kubeconfig holds a reader token.
            assert!(
                held == want,
                "{ctx}: {own}'s {name} is stale ({} bytes in the Secret, {} in OpenBao)",
                held.len(),
                want.len()
            );
        }
        let managed: Vec<&String> = found
            .iter()
            .filter(|(_, s)| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                    .is_some_and(|v| v == "meshtrust")
            })
            .map(|(n, _)| n)
            .collect();
        assert!(
            managed.is_empty(),
            "{ctx}: {own} keeps remote secrets of departed peers: {managed:?}"
        );
    }
}

//! `cargo bench -p meshtrust --bench bootstrap`: meshtrust against the seeds' shell procedure (bao + openssl +
//! kubectl, `bench/seed-procedure.sh`) on the same real servers, side by side, with ratios.
//!
//! Each sample starts a fresh OpenBao and fresh API servers, so both sides bootstrap from nothing.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use meshtrust_testenv::{TestEnv, mesh_file};

const SAMPLES: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn meshtrust(env: &TestEnv, args: &[&str]) -> Duration {
    let file = env.dir().join("mesh.yaml");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(args)
        .arg("--mesh")
        .arg(&file)
        .env("BAO_ADDR", &env.bao.addr)
        .env("BAO_TOKEN", &env.bao.root_token)
        .output()
        .expect("run meshtrust");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "meshtrust {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn shell(env: &TestEnv, phase: &str) -> Duration {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/seed-procedure.sh");
    let clusters: Vec<String> = env
        .clusters
        .iter()
        .map(|c| format!("{}={}={}", c.name, c.kubeconfig.display(), c.server))
        .collect();
    let work = env.dir().join("shell");
    std::fs::create_dir_all(&work).expect("work dir");
    let bao = meshtrust_testenv::Binaries::locate().expect("binaries").bao;
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(phase)
        .env("BAO", bao)
        .env("BAO_ADDR", &env.bao.addr)
        .env("BAO_TOKEN", &env.bao.root_token)
        .env("WORK", &work)
        .env("CLUSTERS", clusters.join(" "))
        .output()
        .expect("run shell procedure");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "shell {phase}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn fresh(clusters: usize) -> TestEnv {
    let env = TestEnv::builder()
        .clusters(clusters)
        .start()
        .expect("test environment");
    std::fs::write(env.dir().join("mesh.yaml"), mesh_file(&env)).expect("mesh file");
    env
}

fn main() {
    let clusters = 2;
    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
        (
            "bootstrap (root, 2 intermediates, 2 remote secrets)",
            vec![],
            vec![],
        ),
        ("re-run with nothing to do", vec![], vec![]),
        ("verify the roots match", vec![], vec![]),
    ];
    for _ in 0..SAMPLES {
        let env = fresh(clusters);
        rows[0].1.push(meshtrust(&env, &["apply"]));
        rows[1].1.push(meshtrust(&env, &["apply"]));
        rows[2].1.push(meshtrust(&env, &["verify"]));
        drop(env);
        let env = fresh(clusters);
        rows[0].2.push(shell(&env, "bootstrap"));
        rows[2].2.push(shell(&env, "verify"));
    }
    println!(
        "\nmeshtrust vs the seeds' shell procedure ({clusters} clusters, median of {SAMPLES}, real OpenBao + kube-apiservers)\n"
    );
    println!(
        "{:<54} {:>12} {:>12} {:>16}",
        "operation", "meshtrust", "shell", "shell/meshtrust"
    );
    for (name, ours, theirs) in rows {
        let ours = median(ours);
        let (theirs_text, ratio) = if theirs.is_empty() {
            ("n/a (fails: exists)".to_string(), "-".to_string())
        } else {
            let t = median(theirs);
            (
                format!("{:.2}s", t.as_secs_f64()),
                format!("{:.1}x", t.as_secs_f64() / ours.as_secs_f64()),
            )
        };
        println!(
            "{:<54} {:>11.2}s {:>12} {:>16}",
            name,
            ours.as_secs_f64(),
            theirs_text,
            ratio
        );
    }
    println!(
        "\nThe shell procedure has no idempotent re-run: its `create` commands fail when the objects exist."
    );
}

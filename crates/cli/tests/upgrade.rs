//! Upgrading meshtrust: the previous release's `meshtrust` (built from git history by
//! `scripts/build-previous-release`) bootstraps the mesh, then its agent and this release's agent run side by
//! side against the real OpenBao and kube-apiservers, as during a rolling upgrade. Each refreshes its reader
//! token and renews its intermediate; each syncs what the other published; nothing is deleted at any sample; and
//! an admin `apply` of this release leaves the older agent working.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshtrust_core::ports::OpenBao;
use meshtrust_testenv::StoreKind;
use support::Mesh;
use support::agent::{Agent, agent_identity, start_agent_binary};

/// Lifetimes that make each agent refresh its token and renew its intermediate about 15 s after the last time.
const LIFETIMES: &str = "ca:\n  intermediate:\n    ttl: 10m\n    renewBefore: 585s\nremoteSecrets:\n  tokenTtl: 10m\n  refreshBefore: 585s\n";
const CLUSTERS: [&str; 2] = ["cluster-a", "cluster-b"];

fn previous_release() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo.join("scripts/build-previous-release"))
        .output()
        .expect("run scripts/build-previous-release");
    assert!(
        out.status.success(),
        "scripts/build-previous-release failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("bash")
        .arg(repo.join("scripts/build-previous-release"))
        .arg("print-path")
        .output()
        .expect("print-path");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn this_release() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meshtrust"))
}

fn ok(mesh: &Mesh, binary: &Path, args: &[&str]) -> String {
    let out = mesh.meshtrust_from(binary, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        binary.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one sample sees of a cluster: its intermediate's serial, the KV version of its published entry, the
/// KV version its peer's remote secret was copied from, and that entry's format version.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    serial: String,
    published: u64,
    peer_synced: u64,
    format: Option<String>,
}

async fn sample(mesh: &Mesh, bao: &meshtrust_bao::OpenBaoClient, index: usize) -> Sample {
    let cluster = CLUSTERS[index];
    let peer = CLUSTERS[1 - index];
    let cacerts = mesh
        .secret(index, "istio-system", "cacerts")
        .await
        .unwrap_or_else(|| panic!("{cluster}: cacerts was deleted"));
    let remote = mesh
        .secret(
            index,
            "istio-system",
            &format!("istio-remote-secret-{peer}"),
        )
        .await
        .unwrap_or_else(|| panic!("{cluster}: the remote secret for {peer} was deleted"));
    let annotation = |s: &k8s_openapi::api::core::v1::Secret, key: &str| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    let entry = bao
        .kv_get("secret", &format!("istio/remote-secrets/{cluster}"))
        .await
        .expect("read KV")
        .unwrap_or_else(|| panic!("{cluster}'s published entry was deleted"));
    Sample {
        serial: annotation(&cacerts, "meshtrust.dev/ca-serial").expect("serial"),
        published: entry.version,
        peer_synced: annotation(&remote, "meshtrust.dev/kv-version")
            .and_then(|v| v.parse().ok())
            .expect("kv-version"),
        format: entry
            .data
            .get("formatVersion")
            .and_then(|v| v.expose_str())
            .map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_the_previous_and_this_release_run_side_by_side() {
    let previous = previous_release();
    // On OpenBao whatever MESHTRUST_STORE says: the previous release predates Vault support.
    let mesh = Mesh::start_on(StoreKind::OpenBao, 2, LIFETIMES);
    // The state as the previous release writes it.
    ok(&mesh, &previous, &["apply"]);
    let bao = support::root_openbao(&mesh);
    let before = [sample(&mesh, &bao, 0).await, sample(&mesh, &bao, 1).await];
    assert_eq!(
        before[0].format, None,
        "the previous release writes no format version"
    );
    for index in 0..2 {
        agent_identity(&mesh, index).await;
    }
    let resync = ["--resync-interval", "2s"];
    let agents: [Agent; 2] = [
        start_agent_binary(this_release(), &mesh, 0, &mesh.file, &resync),
        start_agent_binary(&previous, &mesh, 1, &mesh.file, &resync),
    ];

    // Each agent refreshes its token and renews its intermediate; each peer's secret follows. Every sample
    // finds every Secret and entry in place (`sample` panics otherwise).
    let start = Instant::now();
    let mut samples = 0;
    loop {
        let now = [sample(&mesh, &bao, 0).await, sample(&mesh, &bao, 1).await];
        samples += 1;
        let moved = (0..2).all(|i| {
            now[i].serial != before[i].serial
                && now[i].published > before[i].published
                && now[1 - i].peer_synced > before[i].published
        });
        if moved {
            // This release's agent wrote its entry in the current format; the previous one's has none.
            assert_eq!(now[0].format.as_deref(), Some("1"));
            assert_eq!(now[1].format, None);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no refresh and renewal each way within 120 s: before {before:?}, now {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "a token refresh and a renewal each way, synced across releases, in {:.1} s ({samples} samples, nothing missing)",
        start.elapsed().as_secs_f64()
    );

    // This release's admin apply over the older agent's cluster: the older agent keeps working with what it wrote.
    ok(&mesh, this_release(), &["apply"]);
    let after_apply = sample(&mesh, &bao, 1).await;
    let start = Instant::now();
    loop {
        let now = sample(&mesh, &bao, 1).await;
        if now.serial != after_apply.serial && now.published > after_apply.published {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the previous release's agent stopped renewing after this release's apply: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Converged while both run: each cluster's secret holds what its peer published last.
    let start = Instant::now();
    loop {
        let now = [sample(&mesh, &bao, 0).await, sample(&mesh, &bao, 1).await];
        if now[0].peer_synced == now[1].published && now[1].peer_synced == now[0].published {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agents never agreed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(agents);
    // An agent stopped between a peer's publish and its own sync may leave one secret a version behind: one
    // apply settles that, and both releases then verify the mesh.
    ok(&mesh, this_release(), &["apply"]);
    ok(&mesh, this_release(), &["verify"]);
    ok(&mesh, &previous, &["verify"]);
}

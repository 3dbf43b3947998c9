//! `meshtrust ca rotate-root` as the README shows it, with a real istiod per cluster: the old root stays in
//! every bundle for `ca.rootRotation.phaseDwell` after every cluster signs with the new one, so workload
//! certificates issued before the rotation keep verifying against every peer's `istio-ca-root-cert` (sampled
//! every 200 ms). A phase held by an istiod that refuses the new root is never reported complete.

mod support;

use std::time::{Duration, Instant};

use meshtrust_testenv::{Istiod, IstiodOptions};
use support::Mesh;
use support::istio::workload_identity;
use support::trust_sampler::{Sampler, cacerts_label, settled_on};

/// Exit statuses documented in `meshtrust ca rotate-root --help`.
const EXIT_DWELL: i32 = 3;
const EXIT_HELD: i32 = 4;

const DWELL_SECONDS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_rotation_keeps_the_old_root_for_the_dwell() {
    let test_start = Instant::now();
    let mesh = Mesh::start(
        2,
        &format!("ca:\n  rootRotation:\n    phaseDwell: {DWELL_SECONDS}s\n"),
    );
    mesh.ok(&["apply"]);
    let clusters = &mesh.env.clusters;
    let mut istiods = Vec::new();
    for cluster in clusters {
        workload_identity(cluster).await;
        istiods.push(
            Istiod::start(cluster, mesh.env.dir(), &IstiodOptions { multiroot: true })
                .await
                .expect("istiod starts"),
        );
    }
    let mut sampler = Sampler::default();
    sampler
        .until(clusters, &istiods, Duration::from_secs(60), settled_on(1))
        .await;
    sampler.gaps.clear();
    // Workloads that got their certificates before the rotation keep using them.
    sampler.pin_current(clusters, &istiods).await;

    // The default command: phases 1 and 2, then it returns while the dwell runs.
    let out = mesh.meshtrust(&["ca", "rotate-root"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    sampler.note("ca rotate-root returned");
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(EXIT_DWELL), "{stdout}");
    assert!(stdout.contains("the dwell"), "{stdout}");
    assert!(!stdout.contains("Rotation complete"), "{stdout}");
    for cluster in clusters {
        assert_eq!(cacerts_label(cluster).await, (vec![1, 2], 2));
    }
    let rotated_at = Instant::now();
    // Through the dwell, the certificates signed under root 1 verify everywhere.
    sampler
        .during(
            clusters,
            &istiods,
            Duration::from_secs(DWELL_SECONDS - 4).saturating_sub(rotated_at.elapsed()),
        )
        .await;
    let pinned_checks = sampler.checks;
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);

    // `--wait` stays until the dwell ends and the old root leaves; only then is it complete. (The pinned
    // certificates would expire with a real 24h dwell; with this short one they are dropped now.)
    sampler.unpin();
    let wait = mesh.spawn(&["ca", "rotate-root", "--wait"]);
    sampler
        .until(clusters, &istiods, Duration::from_secs(90), settled_on(2))
        .await;
    let out = wait.wait_with_output().expect("rotate-root --wait ends");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Rotation complete"), "{stdout}");
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(DWELL_SECONDS - 1),
        "the old root left before the dwell"
    );
    sampler.report(test_start);
    eprintln!("pinned-certificate checks through the dwell: {pinned_checks}");
    assert!(sampler.gaps.is_empty(), "trust gaps: {:#?}", sampler.gaps);
}

/// An istiod without ISTIO_MULTIROOT_MESH keeps serving the old root: phase 2 must wait, and neither
/// `--step` nor the default command may call that complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_phase_says_what_it_waits_for_and_is_not_complete() {
    let mesh = Mesh::start(1, "");
    mesh.ok(&["apply"]);
    let cluster = &mesh.env.clusters[0];
    workload_identity(cluster).await;
    let istiods = vec![
        Istiod::start(cluster, mesh.env.dir(), &IstiodOptions { multiroot: false })
            .await
            .expect("istiod starts"),
    ];
    let mut sampler = Sampler::default();
    sampler
        .until(
            &mesh.env.clusters,
            &istiods,
            Duration::from_secs(60),
            settled_on(1),
        )
        .await;

    let first = mesh.meshtrust(&["ca", "rotate-root", "--step"]);
    let first_out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(first.status.success(), "{first_out}");
    assert!(first_out.contains("Round 1 applied"), "{first_out}");
    for args in [
        &["ca", "rotate-root", "--step"][..],
        &["ca", "rotate-root"][..],
    ] {
        let out = mesh.meshtrust(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(EXIT_HELD), "{args:?}: {stdout}");
        assert!(stdout.contains("istiod does not serve"), "{stdout}");
        assert!(!stdout.contains("Rotation complete"), "{stdout}");
    }
    // Phase 1 held: the intermediate was not moved to a root istiod does not serve.
    assert_eq!(cacerts_label(cluster).await, (vec![1, 2], 1));
}

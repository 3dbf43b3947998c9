//! meshtrust against real istiods (built from the istio.io/istio module by `scripts/build-istio`), one per cluster,
//! run out of cluster against real API servers, with a real OpenBao: istiod takes the plugged-in CA, serves the
//! mesh root, signs workload certificates that verify across clusters, discovers the peer cluster through the
//! remote secret meshtrust wrote, and takes a renewed intermediate and a refreshed reader token live.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use meshtrust_testenv::{Istiod, IstiodOptions, TestCluster};
use serde_json::json;
use support::istio::{WORKLOADS, create, openssl_verifies, pem_certs, workload_identity};
use support::{Mesh, field};

/// Polls `check` every 200 ms until it returns `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `root-cert.pem` of the `istio-ca-root-cert` ConfigMap istiod writes into every namespace.
async fn served_root(cluster: &TestCluster) -> Option<String> {
    let client = cluster.client().await.expect("client");
    let cm = Api::<ConfigMap>::namespaced(client, WORKLOADS)
        .get_opt("istio-ca-root-cert")
        .await
        .ok()??;
    cm.data?.get("root-cert.pem").cloned()
}

fn openssl_text(pem: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.pem");
    std::fs::write(&path, pem).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The intermediate (`ca-cert.pem` or `tls.crt`) and the root bundle of a cluster's `cacerts`, in either format.
async fn plugged(mesh: &Mesh, cluster: usize) -> (String, String) {
    let s = mesh.cacerts(cluster).await;
    let data = s.data.as_ref().expect("data");
    if data.contains_key("tls.crt") {
        (field(&s, "tls.crt"), field(&s, "ca.crt"))
    } else {
        (field(&s, "ca-cert.pem"), field(&s, "root-cert.pem"))
    }
}

// Field order is drop order: the istiods stop before the API servers they watch.
struct Running {
    istiods: Vec<Istiod>,
    mesh: Mesh,
}

/// `meshtrust apply`, then an istiod per cluster on the cacerts it wrote.
async fn mesh_with_istiods(extra: &str) -> Running {
    let started = Instant::now();
    let mesh = Mesh::start(2, extra);
    mesh.ok(&["apply"]);
    let mut istiods = Vec::new();
    for cluster in &mesh.env.clusters {
        workload_identity(cluster).await;
        istiods.push(
            Istiod::start(cluster, mesh.env.dir(), &IstiodOptions::default())
                .await
                .expect("istiod starts"),
        );
    }
    eprintln!(
        "environment with 2 istiods ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Running { istiods, mesh }
}

/// Everything the first "Must show" asks for, in one secretFormat.
async fn plugged_ca_is_served_and_certificates_verify_across_clusters(running: &Running) {
    let Running { mesh, istiods } = running;
    let mut roots = Vec::new();
    for (i, istiod) in istiods.iter().enumerate() {
        let cluster = &mesh.env.clusters[i];
        let (intermediate, root) = plugged(mesh, i).await;
        assert!(
            istiod.log_text().contains("Use local CA certificate"),
            "istiod {} did not take the plugged-in CA; its log: {}",
            istiod.cluster,
            istiod.log.display()
        );
        let served = eventually("istio-ca-root-cert", Duration::from_secs(30), || {
            served_root(cluster)
        })
        .await;
        assert_eq!(
            pem_certs(&served),
            pem_certs(&root),
            "istiod {} serves the mesh root",
            istiod.cluster
        );
        // The TLS handshake trusts only the mesh root, so istiod's serving certificate chains to it.
        let chain = istiod
            .workload_certificate(cluster, WORKLOADS, "app", &root)
            .await
            .expect("workload certificate");
        let certs: Vec<String> = chain.iter().flat_map(|c| pem_certs(c)).collect();
        assert_eq!(
            certs[1],
            pem_certs(&intermediate)[0],
            "signed by this cluster's intermediate"
        );
        assert!(
            openssl_text(&certs[0]).contains("URI:spiffe://cluster.local/ns/workloads/sa/app"),
            "the workload identity is in the SAN"
        );
        roots.push((served, chain));
    }
    let (root_a, chain_a) = &roots[0];
    let (root_b, chain_b) = &roots[1];
    assert_ne!(chain_a[0], chain_b[0]);
    openssl_verifies(chain_b, root_a).expect("cluster-b's workload verifies with cluster-a's root");
    openssl_verifies(chain_a, root_b).expect("cluster-a's workload verifies with cluster-b's root");
    let stranger = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.self_signed(&rcgen::KeyPair::generate()?))
        .expect("stranger root")
        .pem();
    assert!(
        openssl_verifies(chain_a, &stranger).is_err(),
        "the checker is not vacuous"
    );
}

async fn clusterz_synced(istiod: &Istiod, peer: &str) -> Option<()> {
    let text = istiod.debug("/debug/clusterz").await.ok()?;
    let clusters: serde_json::Value = serde_json::from_str(&text).ok()?;
    clusters.as_array()?.iter().find(|c| {
        c["id"] == peer
            && c["syncStatus"] == "synced"
            && c["secretName"] == format!("istio-system/istio-remote-secret-{peer}")
    })?;
    Some(())
}

async fn endpointz_lists(istiod: &Istiod, host: &str, ip: &str) -> Option<()> {
    let text = istiod.debug("/debug/endpointz").await.ok()?;
    (text.contains(host) && text.contains(ip)).then_some(())
}

/// A Service with one EndpointSlice address in `cluster`, as a workload in that cluster would have.
async fn service_with_endpoint(cluster: &TestCluster, name: &str, ip: &str) {
    let client = cluster.client().await.expect("client");
    create(
        &Api::<Service>::namespaced(client.clone(), WORKLOADS),
        json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    create(
        &Api::<EndpointSlice>::namespaced(client, WORKLOADS),
        json!({
            "metadata": {"name": format!("{name}-1"), "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_serves_the_plugged_ca_discovers_the_peer_and_follows_renewals() {
    let test_start = Instant::now();
    // Intermediates fall due 20 s after issue, and so do reader tokens (Kubernetes' shortest is 10 minutes), so
    // the second apply renews both.
    let running = mesh_with_istiods(
        "ca:\n  intermediate:\n    ttl: 1h\n    renewBefore: 3580s\nremoteSecrets:\n  tokenTtl: 10m\n  refreshBefore: 580s\n",
    )
    .await;
    let applied_at = Instant::now();
    plugged_ca_is_served_and_certificates_verify_across_clusters(&running).await;
    let Running { mesh, istiods } = &running;
    let (a, b) = (&mesh.env.clusters[0], &mesh.env.clusters[1]);
    let istiod_a = &istiods[0];

    // Multicluster: cluster-a's istiod reads cluster-b through the remote secret meshtrust wrote.
    eventually(
        "cluster-b synced in clusterz",
        Duration::from_secs(30),
        || clusterz_synced(istiod_a, "cluster-b"),
    )
    .await;
    service_with_endpoint(b, "echo", "10.1.2.3").await;
    eventually(
        "echo in cluster-a's endpointz",
        Duration::from_secs(30),
        || endpointz_lists(istiod_a, "echo.workloads.svc.cluster.local", "10.1.2.3"),
    )
    .await;

    // Renewal: a new intermediate in every cluster and a new reader token in every peer, from one apply.
    let secret_before = mesh
        .secret(0, "istio-system", "istio-remote-secret-cluster-b")
        .await
        .expect("remote secret");
    let (old_intermediate, root) = plugged(mesh, 0).await;
    let wait = Duration::from_secs(21).saturating_sub(applied_at.elapsed());
    tokio::time::sleep(wait).await;
    let renewed_at = Instant::now();
    mesh.ok(&["apply"]);
    let (new_intermediate, same_root) = plugged(mesh, 0).await;
    assert_ne!(new_intermediate, old_intermediate, "a renewed intermediate");
    assert_eq!(same_root, root);
    let secret_after = mesh
        .secret(0, "istio-system", "istio-remote-secret-cluster-b")
        .await
        .expect("remote secret");
    assert_ne!(
        field(&secret_after, "cluster-b"),
        field(&secret_before, "cluster-b"),
        "a refreshed reader token reached cluster-a"
    );

    // istiod takes the new intermediate live: the next workload certificate is signed by it.
    let new_first = pem_certs(&new_intermediate)[0].clone();
    eventually(
        "a workload certificate from the new intermediate",
        Duration::from_secs(30),
        || async {
            let chain = istiod_a
                .workload_certificate(a, WORKLOADS, "app", &root)
                .await
                .ok()?;
            let certs: Vec<String> = chain.iter().flat_map(|c| pem_certs(c)).collect();
            (certs.get(1) == Some(&new_first)).then_some(())
        },
    )
    .await;
    eprintln!(
        "istiod signs with the renewed intermediate {:.1}s after apply",
        renewed_at.elapsed().as_secs_f64()
    );

    // After the reader-token refresh cluster-b is still synced, and a Service created now is discovered.
    eventually(
        "cluster-b synced after the refresh",
        Duration::from_secs(30),
        || clusterz_synced(istiod_a, "cluster-b"),
    )
    .await;
    service_with_endpoint(b, "after-refresh", "10.1.2.4").await;
    eventually(
        "after-refresh in cluster-a's endpointz",
        Duration::from_secs(30),
        || {
            endpointz_lists(
                istiod_a,
                "after-refresh.workloads.svc.cluster.local",
                "10.1.2.4",
            )
        },
    )
    .await;
    eprintln!("test took {:.1}s", test_start.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_takes_the_tls_secret_format() {
    let test_start = Instant::now();
    let running = mesh_with_istiods("ca:\n  secretFormat: tls\n").await;
    let keys: Vec<String> = running
        .mesh
        .cacerts(0)
        .await
        .data
        .expect("data")
        .into_keys()
        .collect();
    assert_eq!(keys, vec!["ca.crt", "tls.crt", "tls.key"]);
    plugged_ca_is_served_and_certificates_verify_across_clusters(&running).await;
    eprintln!("test took {:.1}s", test_start.elapsed().as_secs_f64());
}

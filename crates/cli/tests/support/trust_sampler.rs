//! Sampling trust at the workload level while a root moves: every 200 ms, each istiod's current workload
//! certificate (and any certificate pinned before the move) must verify against every other cluster's
//! `istio-ca-root-cert`, with `openssl verify` as the independent checker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use meshtrust_core::secret::SecretBytes;
use meshtrust_testenv::{Istiod, TestCluster, TestEnvError};

use super::istio::{WORKLOADS, openssl_verifies, pem_certs};

/// An istiod whose CA the sampler asks for workload certificates: a process on loopback ([`Istiod`]) or a pod
/// on a test node (`super::pod_istiod::PodIstiod`).
pub trait WorkloadCa {
    /// A workload certificate chain for ServiceAccount `namespace/name` of `cluster`, trusting `roots_pem`
    /// for istiod's serving certificate.
    fn workload_certificate(
        &self,
        cluster: &TestCluster,
        namespace: &str,
        service_account: &str,
        roots_pem: &str,
    ) -> impl std::future::Future<Output = Result<Vec<String>, TestEnvError>> + Send;
}

impl WorkloadCa for Istiod {
    async fn workload_certificate(
        &self,
        cluster: &TestCluster,
        namespace: &str,
        service_account: &str,
        roots_pem: &str,
    ) -> Result<Vec<String>, TestEnvError> {
        Istiod::workload_certificate(self, cluster, namespace, service_account, roots_pem).await
    }
}

/// The roots istiod serves to workloads in `cluster`, or `None` before it wrote them.
pub async fn served_roots(cluster: &TestCluster) -> Option<String> {
    let client = cluster.client().await.ok()?;
    let cm = Api::<ConfigMap>::namespaced(client, WORKLOADS)
        .get_opt("istio-ca-root-cert")
        .await
        .ok()??;
    cm.data?.get("root-cert.pem").cloned()
}

/// The root generations a PEM bundle holds, from the roots' CNs (`... G2` for generation 2), sorted.
pub fn generations(pem: &str) -> Vec<u32> {
    let mut out: Vec<u32> = meshtrust_pki::parse_certs(pem, "roots")
        .map(|certs| {
            certs
                .iter()
                .map(|c| generation(&c.facts.subject_cn))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// A root's generation from its CN; a root restored away from OpenBao is told apart by the test's labels.
pub fn generation(cn: &str) -> u32 {
    cn.rsplit_once(" G")
        .and_then(|(_, g)| g.parse().ok())
        .unwrap_or(1)
}

/// `cacerts` of `cluster` as plain text fields.
pub async fn cacerts_data(cluster: &TestCluster) -> BTreeMap<String, SecretBytes> {
    let client = cluster.client().await.expect("client");
    let secret = Api::<Secret>::namespaced(client, "istio-system")
        .get("cacerts")
        .await
        .expect("cacerts exists");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                SecretBytes::new(String::from_utf8_lossy(&v.0).to_string()),
            )
        })
        .collect()
}

/// One cluster's `cacerts` as (trusted generations, signing generation).
pub async fn cacerts_label(cluster: &TestCluster) -> (Vec<u32>, u32) {
    let data = cacerts_data(cluster).await;
    // Istio's layout, or cert-manager's (`ca.crt` holds the roots).
    let roots = data
        .get("root-cert.pem")
        .or_else(|| data.get("ca.crt"))
        .and_then(|v| v.expose_str())
        .unwrap_or("")
        .to_string();
    let state = meshtrust_pki::cacerts::inspect(&data, 0);
    let signer = meshtrust_pki::parse_certs(&roots, "roots")
        .ok()
        .and_then(|certs| {
            certs
                .into_iter()
                .find(|c| Some(&c.facts.fingerprint) == state.issuer_fingerprint.as_ref())
        })
        .map_or(0, |c| generation(&c.facts.subject_cn));
    (generations(&roots), signer)
}

/// Each cluster's `cacerts` as (trusted generations, signing generation).
pub type CacertsStates = [(Vec<u32>, u32)];

pub struct Sampler {
    pub started: Instant,
    pub samples: usize,
    pub checks: usize,
    pub gaps: Vec<String>,
    pub timeline: Vec<(f64, String)>,
    /// Every root seen, to reach each istiod over TLS whatever it serves with.
    all_roots: String,
    /// Workload certificates issued before a move, by cluster index: they must keep verifying everywhere.
    pinned: Vec<(usize, Vec<String>)>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            started: Instant::now(),
            samples: 0,
            checks: 0,
            gaps: vec![],
            timeline: vec![],
            all_roots: String::new(),
            pinned: vec![],
        }
    }
}

impl Sampler {
    pub fn note(&mut self, what: &str) {
        let t = self.started.elapsed().as_secs_f64();
        eprintln!("[{t:6.1}s] {what}");
        self.timeline.push((t, what.to_string()));
    }

    /// Keeps each istiod's current workload certificate: later samples check it as well, as a workload that
    /// got it before the move and still uses it.
    pub async fn pin_current(&mut self, clusters: &[TestCluster], istiods: &[impl WorkloadCa]) {
        self.sample(clusters, istiods).await;
        for (i, istiod) in istiods.iter().enumerate() {
            let chain = WorkloadCa::workload_certificate(
                istiod,
                &clusters[i],
                WORKLOADS,
                "app",
                &self.all_roots,
            )
            .await
            .expect("workload certificate to pin");
            self.pinned.push((i, chain));
        }
    }

    /// Stops checking the pinned certificates (a real dwell outlives them; a test's short one does not).
    pub fn unpin(&mut self) {
        self.pinned.clear();
    }

    /// One sample: each istiod's current workload certificate, and every pinned one, against every other
    /// cluster's served roots.
    pub async fn sample(&mut self, clusters: &[TestCluster], istiods: &[impl WorkloadCa]) {
        let mut served = Vec::new();
        for c in clusters {
            served.push(served_roots(c).await.unwrap_or_default());
        }
        for s in &served {
            for cert in pem_certs(s) {
                if !self.all_roots.contains(&cert) {
                    self.all_roots.push_str(&cert);
                }
            }
        }
        let mut label = Vec::new();
        let mut chains: Vec<(usize, Vec<String>, &str)> = Vec::new();
        for (i, istiod) in istiods.iter().enumerate() {
            let (trust, sign) = cacerts_label(&clusters[i]).await;
            label.push(format!(
                "{}: cacerts trust {trust:?} sign {sign}, istiod serves {:?}",
                clusters[i].name,
                generations(&served[i])
            ));
            match WorkloadCa::workload_certificate(
                istiod,
                &clusters[i],
                WORKLOADS,
                "app",
                &self.all_roots,
            )
            .await
            {
                Ok(chain) => chains.push((i, chain, "current")),
                Err(e) => self.gaps.push(format!(
                    "{}: no workload certificate: {e}",
                    clusters[i].name
                )),
            }
        }
        chains.extend(self.pinned.iter().map(|(i, c)| (*i, c.clone(), "pinned")));
        for (i, chain, kind) in &chains {
            for (j, roots) in served.iter().enumerate() {
                if *i == j {
                    continue;
                }
                self.checks += 1;
                if let Err(e) = openssl_verifies(chain, roots) {
                    self.gaps.push(format!(
                        "{:.1}s: {}'s {kind} workload certificate does not verify with {}'s istio-ca-root-cert: {e}",
                        self.started.elapsed().as_secs_f64(),
                        clusters[*i].name,
                        clusters[j].name
                    ));
                }
            }
        }
        self.samples += 1;
        let label = label.join("; ");
        if self.timeline.last().is_none_or(|(_, l)| *l != label) {
            self.note(&label);
        }
    }

    /// Samples every 200 ms until `done` holds for a sample, or fails after `limit`.
    pub async fn until(
        &mut self,
        clusters: &[TestCluster],
        istiods: &[impl WorkloadCa],
        limit: Duration,
        done: impl Fn(&CacertsStates, &[Vec<u32>]) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let tick = Instant::now();
            self.sample(clusters, istiods).await;
            let mut states = Vec::new();
            let mut served = Vec::new();
            for c in clusters {
                states.push(cacerts_label(c).await);
                served.push(generations(&served_roots(c).await.unwrap_or_default()));
            }
            if done(&states, &served) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "not reached within {limit:?}; timeline: {:#?}",
                self.timeline
            );
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
        }
    }

    /// Samples every 200 ms for `span`.
    pub async fn during(
        &mut self,
        clusters: &[TestCluster],
        istiods: &[impl WorkloadCa],
        span: Duration,
    ) {
        let start = Instant::now();
        while start.elapsed() < span {
            let tick = Instant::now();
            self.sample(clusters, istiods).await;
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
        }
    }

    pub fn report(&self, test_start: Instant) {
        eprintln!("timeline:");
        for (t, label) in &self.timeline {
            eprintln!("  {t:6.1}s  {label}");
        }
        eprintln!(
            "{} samples, {} cross-cluster checks, {} gaps; test took {:.1}s",
            self.samples,
            self.checks,
            self.gaps.len(),
            test_start.elapsed().as_secs_f64()
        );
    }
}

/// Every cluster trusts and signs with `generation` only, and every istiod serves it only.
pub fn settled_on(generation: u32) -> impl Fn(&CacertsStates, &[Vec<u32>]) -> bool {
    move |states, served| {
        states
            .iter()
            .all(|(t, s)| *t == [generation] && *s == generation)
            && served.iter().all(|s| *s == [generation])
    }
}

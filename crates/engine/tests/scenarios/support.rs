//! The fixtures every scenario shares: a mesh file for N clusters, a harness holding the in-memory OpenBao and
//! clusters with one clock, and the checks `meshtrust verify` would make. Nothing here talks to a server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use meshtrust_core::facts::CacertsState;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::plan::{Change, Plan};
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::{Cluster, ErrorKind, OpenBao, SecretObject};
use meshtrust_core::secret::SecretBytes;
use meshtrust_core::verify::{verify_remote_secrets, verify_trust};
use meshtrust_engine::{AppliedChange, ApplyReport, Engine, EngineError, Scope, Snapshot};
use meshtrust_fakes::{FakeCluster, FakeOpenBao};
use meshtrust_pki::cacerts::inspect;

/// 2026-01-01T00:00:00Z: every scenario starts here.
pub const T0: i64 = 1_767_225_600;
pub const HOUR: i64 = 3600;
pub const ISTIO_NS: &str = "istio-system";
pub const KV: &str = "secret";
pub const INDEX: &str = "istio/meshtrust-index";

/// A mesh file for clusters named as given. EC P-256 keys everywhere keep every scenario fast (a shared root
/// is generated locally with the root key settings; the fake OpenBao makes EC roots whatever is asked).
#[derive(Clone)]
pub struct MeshBuilder {
    clusters: Vec<String>,
    shared_root: bool,
    tls_format: bool,
    bao_namespace: Option<String>,
}

impl MeshBuilder {
    pub fn new(clusters: &[&str]) -> Self {
        MeshBuilder {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            shared_root: false,
            tls_format: false,
            bao_namespace: None,
        }
    }

    pub fn shared_root(mut self) -> Self {
        self.shared_root = true;
        self
    }

    /// `ca.secretFormat: tls` (`tls.crt`, `tls.key`, `ca.crt`).
    pub fn tls_format(mut self) -> Self {
        self.tls_format = true;
        self
    }

    pub fn bao_namespace(mut self, namespace: &str) -> Self {
        self.bao_namespace = Some(namespace.to_string());
        self
    }

    pub fn yaml(&self) -> String {
        let mut out = String::from(
            "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: test-mesh\nopenbao:\n  address: https://bao.example:8200\n",
        );
        if let Some(ns) = &self.bao_namespace {
            out.push_str(&format!("  namespace: {ns}\n"));
        }
        out.push_str("ca:\n");
        if self.shared_root {
            out.push_str("  mode: shared-root\n");
        }
        if self.tls_format {
            out.push_str("  secretFormat: tls\n");
        }
        out.push_str(
            "  root:\n    keyType: ec\n    keyBits: 256\n  intermediate:\n    keyType: ec\n    keyBits: 256\n",
        );
        out.push_str("clusters:\n");
        for name in &self.clusters {
            out.push_str(&format!("  - name: {name}\n    network: network-{name}\n"));
        }
        out
    }

    pub fn build(&self) -> Mesh {
        Mesh::from_yaml(&self.yaml(), "mesh.yaml", PathBuf::from("."))
            .expect("the test mesh file is valid")
    }
}

/// The fakes of one mesh and the one clock they and the engine share.
pub struct Harness {
    pub mesh: Mesh,
    pub bao: FakeOpenBao,
    pub clusters: BTreeMap<String, FakeCluster>,
    now: Arc<AtomicI64>,
}

/// What one `converge` returned.
pub type Converged = (Plan, ApplyReport, Snapshot);

impl Harness {
    pub fn new(mesh: &MeshBuilder) -> Self {
        let mesh = mesh.build();
        let clusters = mesh
            .clusters
            .iter()
            .map(|c| (c.name.clone(), FakeCluster::new(&c.name, T0)))
            .collect();
        Harness {
            mesh,
            bao: FakeOpenBao::new(T0),
            clusters,
            now: Arc::new(AtomicI64::new(T0)),
        }
    }

    /// A fresh, empty mesh of the named clusters.
    pub fn fresh(clusters: &[&str]) -> Self {
        Self::new(&MeshBuilder::new(clusters))
    }

    pub fn cluster(&self, name: &str) -> &FakeCluster {
        self.clusters.get(name).expect("a cluster of the harness")
    }

    /// What the agent's deploy files create before the agent runs (`meshtrust render agent | kubectl apply`):
    /// the Istio namespace and the reader identity, which the agent itself may not write.
    pub async fn deploy_files(&self, cluster: &str) {
        let settings = self.mesh.cluster(cluster).expect("a cluster of the mesh");
        let fake = self.cluster(cluster);
        fake.create_namespace(ISTIO_NS, &BTreeMap::new())
            .await
            .expect("namespace");
        for object in meshtrust_engine::desired_reader(settings) {
            fake.put_object(&object).await.expect("reader identity");
        }
    }

    pub fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Moves every clock (engine, OpenBao, clusters) forward.
    pub fn advance(&self, seconds: i64) {
        let now = self.now.fetch_add(seconds, Ordering::SeqCst) + seconds;
        self.bao.set_now(now);
        for c in self.clusters.values() {
            c.set_now(now);
        }
    }

    /// An engine over `mesh` with `scope`, connected to the named clusters only.
    pub fn engine_for(&self, mesh: Mesh, scope: Scope, connected: &[&str]) -> Engine {
        let clusters = connected
            .iter()
            .map(|n| {
                let c: Arc<dyn Cluster> = Arc::new(self.cluster(n).clone());
                (n.to_string(), c)
            })
            .collect();
        let bao: Arc<dyn OpenBao> = Arc::new(self.bao.clone());
        Engine::new(mesh, bao, clusters).with_scope(scope)
    }

    /// The admin engine, connected to every cluster.
    pub fn engine(&self) -> Engine {
        let names: Vec<&str> = self.clusters.keys().map(String::as_str).collect();
        self.engine_for(self.mesh.clone(), Scope::Admin, &names)
    }

    /// An agent of one cluster.
    pub fn agent(&self, cluster: &str) -> Engine {
        self.engine_for(self.mesh.clone(), Scope::Agent, &[cluster])
    }

    pub fn clock(&self) -> impl Fn() -> i64 + Send + Sync + use<> {
        let now = self.now.clone();
        move || now.load(Ordering::SeqCst)
    }

    pub async fn converge_with(
        &self,
        engine: &Engine,
        options: PlanOptions,
        progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
    ) -> Result<Converged, EngineError> {
        engine.converge(&self.clock(), options, progress).await
    }

    /// One admin `converge` with default options.
    pub async fn converge(&self) -> Result<Converged, EngineError> {
        self.converge_with(&self.engine(), PlanOptions::default(), &mut |_, _| {})
            .await
    }

    /// Converges and forgets every call made so far: the start of a scenario on a settled mesh.
    pub async fn settled(clusters: &[&str]) -> Self {
        Self::settled_mesh(&MeshBuilder::new(clusters)).await
    }

    pub async fn settled_mesh(mesh: &MeshBuilder) -> Self {
        let h = Self::new(mesh);
        h.converge().await.expect("a fresh mesh converges");
        h.clear_calls();
        h
    }

    pub fn clear_calls(&self) {
        self.bao.calls().clear();
        for c in self.clusters.values() {
            c.calls().clear();
        }
    }

    /// Every write since the last `clear_calls`, OpenBao's first, then each cluster's in name order, each as
    /// `"<system>: <call>"`.
    pub fn writes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .bao
            .calls()
            .writes()
            .into_iter()
            .map(|w| format!("openbao: {w}"))
            .collect();
        for (name, c) in &self.clusters {
            out.extend(
                c.calls()
                    .writes()
                    .into_iter()
                    .map(|w| format!("{name}: {w}")),
            );
        }
        out
    }

    /// Every call (reads too) `system` ("openbao" or a cluster name) received.
    pub fn calls(&self, system: &str) -> Vec<String> {
        if system == "openbao" {
            self.bao.calls().all()
        } else {
            self.cluster(system).calls().all()
        }
    }

    pub fn secret(&self, cluster: &str, name: &str) -> Option<SecretObject> {
        self.cluster(cluster)
            .with_state(|s| s.secret(ISTIO_NS, name).cloned())
    }

    pub fn cacerts(&self, cluster: &str) -> Option<SecretObject> {
        self.secret(cluster, "cacerts")
    }

    /// A cluster's `cacerts` as istiod would judge it now.
    pub fn trust(&self, cluster: &str) -> CacertsState {
        let secret = self
            .cacerts(cluster)
            .unwrap_or_else(|| panic!("{cluster} has a cacerts"));
        inspect(&secret.data, self.now())
    }

    /// Every cluster's `root-cert.pem` holds the root that signed every other cluster's intermediate, and
    /// every bundle is one istiod accepts: no workload of one cluster is refused by another.
    pub fn assert_no_trust_gap(&self) {
        let states: BTreeMap<&str, CacertsState> = self
            .clusters
            .keys()
            .map(|n| (n.as_str(), self.trust(n)))
            .collect();
        for (name, state) in &states {
            assert!(state.problems.is_empty(), "{name}: {:?}", state.problems);
            for (peer, other) in &states {
                let issuer = other.issuer_fingerprint.as_ref().expect("issuer known");
                assert!(
                    state.trusted_roots.contains(issuer),
                    "{name} does not trust the root that signed {peer}'s intermediate"
                );
            }
        }
    }

    /// What `meshtrust verify` checks, on a fresh observation: no finding about trust or remote secrets, every
    /// bundle clean, the same roots everywhere, and those roots are the newest one OpenBao (or KV) holds.
    pub async fn assert_verified(&self) -> Snapshot {
        let snapshot = self
            .engine()
            .observe(self.now())
            .await
            .expect("observe settles");
        let observed = snapshot.facts();
        assert_eq!(verify_trust(&self.mesh, observed), vec![]);
        assert_eq!(verify_remote_secrets(&self.mesh, observed), vec![]);
        self.assert_no_trust_gap();
        let roots: Vec<Vec<String>> = self
            .clusters
            .keys()
            .map(|n| self.trust(n).trusted_roots)
            .collect();
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "the same roots everywhere: {roots:?}"
        );
        let expected = match observed.openbao.newest_root() {
            Some(root) => root.cert.fingerprint.clone(),
            None => observed
                .openbao
                .shared_root
                .as_ref()
                .expect("a root in OpenBao or KV")
                .fingerprint
                .clone(),
        };
        assert_eq!(roots[0], vec![expected]);
        snapshot
    }

    /// One round of each named cluster's agent, in order, checking for a trust gap after each.
    pub async fn agent_rounds(&self, clusters: &[&str]) {
        for cluster in clusters {
            self.converge_with(&self.agent(cluster), PlanOptions::default(), &mut |_, _| {})
                .await
                .expect("an agent round");
            self.assert_no_trust_gap();
        }
    }

    /// Plays istiod accepting its `cacerts`: `istio-ca-root-cert` serves the bundle's `root-cert.pem`.
    pub fn istiod_serves_cacerts(&self, cluster: &str) {
        let roots = self
            .cacerts(cluster)
            .and_then(|s| {
                s.data
                    .get("root-cert.pem")
                    .and_then(|v| v.expose_str().map(str::to_string))
            })
            .expect("a cacerts with root-cert.pem");
        self.istiod_serves(cluster, &roots);
    }

    /// Plays istiod writing `istio-ca-root-cert` with `roots_pem`.
    pub fn istiod_serves(&self, cluster: &str, roots_pem: &str) {
        self.cluster(cluster).with_state(|s| {
            s.config_maps.insert(
                (ISTIO_NS.to_string(), "istio-ca-root-cert".to_string()),
                BTreeMap::from([("root-cert.pem".to_string(), roots_pem.to_string())]),
            );
        });
    }

    /// The generations of the roots a cluster's `cacerts` trusts, and of the root that signed it.
    pub fn generations(&self, cluster: &str) -> (Vec<u32>, u32) {
        let snapshot_roots = self.bao.with_state(|s| s.issuer_names("pki")).len() as u32;
        let state = self.trust(cluster);
        let fingerprints: Vec<String> = (1..=snapshot_roots)
            .map(|g| self.root_fingerprint(g))
            .collect();
        let generation = |fp: &String| {
            fingerprints
                .iter()
                .position(|f| f == fp)
                .map_or(0, |i| i as u32 + 1)
        };
        let trusted = state.trusted_roots.iter().map(generation).collect();
        let signing = state.issuer_fingerprint.as_ref().map_or(0, generation);
        (trusted, signing)
    }

    /// The fingerprint of root generation `generation` in OpenBao.
    pub fn root_fingerprint(&self, generation: u32) -> String {
        let pem = self.root_pem(generation);
        meshtrust_pki::parse_certs(&pem, "root")
            .expect("a root certificate")
            .remove(0)
            .facts
            .fingerprint
    }

    /// The PEM of root generation `generation` in OpenBao.
    pub fn root_pem(&self, generation: u32) -> String {
        self.bao
            .with_state(|s| s.issuer_pem("pki", &format!("meshtrust-root-{generation}")))
            .expect("the root exists")
    }

    /// A namespace created by someone else, as `istioctl install` does.
    pub fn create_istio_namespace(&self, cluster: &str) {
        self.cluster(cluster).with_state(|s| {
            s.namespaces.insert(ISTIO_NS.into(), BTreeMap::new());
        });
    }

    /// A Secret meshtrust did not write (no managed-by label).
    pub fn insert_unmanaged(&self, cluster: &str, name: &str, labels: &[(&str, &str)]) {
        self.create_istio_namespace(cluster);
        let secret = SecretObject {
            namespace: ISTIO_NS.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data: BTreeMap::from([(
                "ca-cert.pem".to_string(),
                SecretBytes::new("someone else's"),
            )]),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        self.cluster(cluster)
            .with_state(|s| s.insert_secret(secret));
    }
}

/// `lines(&["a", "b"])` as owned strings, to compare with [`Harness::writes`].
pub fn lines(expected: &[&str]) -> Vec<String> {
    expected.iter().map(|s| s.to_string()).collect()
}

/// The port error kind of an engine error, if it is one.
pub fn port_kind(e: &EngineError) -> Option<ErrorKind> {
    match e {
        EngineError::Port(p) => Some(p.kind),
        _ => None,
    }
}

/// The intermediate's serial in a cluster's `cacerts`.
pub fn serial(h: &Harness, cluster: &str) -> String {
    h.trust(cluster).ca_cert.expect("an intermediate").serial
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apiserver::TestCluster;
use crate::binaries::NodeBinaries;
use crate::etcd::Etcd;
use crate::node::{NodeLink, TestNode};
use crate::openbao::{OpenBaoServer, TlsMaterial};
use crate::openbao_ha::OpenBaoCluster;
use crate::ports::retry_on_port_clash;
use crate::process::ManagedProcess;
use crate::{Binaries, StoreKind, TestEnvError};

/// `cluster-a`, `cluster-b`, ... for index 0, 1, ...
pub fn cluster_name(index: usize) -> String {
    let letter = (b'a' + (index % 26) as u8) as char;
    if index < 26 {
        format!("cluster-{letter}")
    } else {
        format!("cluster-{letter}{}", index / 26)
    }
}

pub struct TestEnvBuilder {
    clusters: usize,
    dir: Option<PathBuf>,
    persistent_openbao: bool,
    openbao_ha: bool,
    store: Option<StoreKind>,
    /// Some: a real node per cluster, with these images (OCI layout tarballs) imported besides the pause image.
    nodes: Option<Vec<PathBuf>>,
    token_controller: bool,
}

impl TestEnvBuilder {
    /// A real node per cluster ([`TestEnv::nodes`]): kubelet, containerd and kube-proxy in namespaces of
    /// their own, with the controller manager and the scheduler; OpenBao and every API server then listen on
    /// addresses the pods reach (the hosts' ends of the nodes' veth pairs). `images` are OCI layout tarballs
    /// (`scripts/build-image`) imported into every node. Needs root.
    pub fn nodes(mut self, images: Vec<PathBuf>) -> Self {
        self.nodes = Some(images);
        self
    }

    /// Also kube-controller-manager's `serviceaccount-token` controller per cluster (and nothing else of it):
    /// legacy service-account token Secrets get their token and `ca.crt`, as `istioctl create-remote-secret`
    /// needs. Node environments run the whole controller manager already.
    pub fn token_controller(mut self) -> Self {
        self.token_controller = true;
        self
    }

    /// Runs this environment on `store` whatever `MESHTRUST_STORE` says (tests of one server's behaviour).
    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = Some(store);
        self
    }

    /// Also a 3-node OpenBao cluster on Raft ([`TestEnv::bao_ha`]); the mesh file then points at its first node.
    pub fn openbao_ha(mut self) -> Self {
        self.openbao_ha = true;
        self
    }

    pub fn clusters(mut self, n: usize) -> Self {
        self.clusters = n;
        self
    }

    /// An OpenBao with file storage that keeps its state across [`OpenBaoServer::restart`].
    pub fn persistent_openbao(mut self) -> Self {
        self.persistent_openbao = true;
        self
    }

    /// Keep files (kubeconfigs, logs) in `dir` instead of a temporary directory removed on drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Starts OpenBao, etcd and every API server, and returns once all of them answer.
    pub fn start(self) -> Result<TestEnv, TestEnvError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let bins = Binaries::locate()?;
        let store = match self.store {
            Some(store) => store,
            None => StoreKind::from_env()?,
        };
        let (dir, tempdir) = match self.dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(TestEnvError::io(&dir))?;
                (dir, None)
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("meshtrust-testenv-")
                    .tempdir()
                    .map_err(TestEnvError::io(std::env::temp_dir()))?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let node_bins = match self.nodes {
            Some(_) => Some(NodeBinaries::locate()?),
            None => None,
        };
        let mut links = Vec::new();
        if node_bins.is_some() {
            for _ in 0..self.clusters {
                links.push(NodeLink::create()?);
            }
        }
        // With nodes, OpenBao (and each Raft node) also listens over TLS where pods reach it: the first node's
        // host address, one private CA for all of them.
        let tls = match links.first() {
            Some(link) => Some(TlsMaterial::write(&dir, &link.host_ip)?),
            None => None,
        };
        let bao = retry_on_port_clash(|| {
            if self.persistent_openbao {
                OpenBaoServer::start_persistent(&bins, store, &dir)
            } else {
                OpenBaoServer::start(&bins, store, &dir, tls.as_ref())
            }
        })?;
        let bao_ha = if self.openbao_ha {
            Some(OpenBaoCluster::start(&bins, store, &dir, 3, tls.as_ref())?)
        } else {
            None
        };
        let etcd = retry_on_port_clash(|| Etcd::start(&bins, &dir))?;
        let mut clusters = Vec::with_capacity(self.clusters);
        for i in 0..self.clusters {
            let host_ip = links.get(i).map(|l| l.host_ip.as_str());
            clusters.push(retry_on_port_clash(|| {
                TestCluster::start(&bins, &dir, &cluster_name(i), &etcd.url, host_ip)
            })?);
        }
        let mut token_controllers = Vec::new();
        if self.token_controller && node_bins.is_none() {
            let bin = crate::binaries::kube_controller_manager()?;
            for cluster in &clusters {
                token_controllers.push(cluster.start_token_controller(&bin, &dir)?);
            }
        }
        let nodes = match node_bins {
            Some(node_bins) => start_nodes(
                &node_bins,
                &clusters,
                links,
                self.nodes.as_deref().unwrap_or_default(),
            )?,
            None => Vec::new(),
        };
        Ok(TestEnv {
            nodes,
            token_controllers,
            clusters,
            bao,
            bao_ha,
            etcd,
            dir,
            _tempdir: tempdir,
        })
    }
}

/// A running environment. Dropping it stops every process it started.
pub struct TestEnv {
    // Field order is drop order: nodes stop before their API servers, API servers before the etcd they use.
    /// With [`TestEnvBuilder::nodes`]: one node per cluster, in the same order.
    pub nodes: Vec<TestNode>,
    /// With [`TestEnvBuilder::token_controller`]: one per cluster.
    token_controllers: Vec<ManagedProcess>,
    pub clusters: Vec<TestCluster>,
    /// The store: OpenBao, or Vault with `MESHTRUST_STORE=vault` (its `kind` says which).
    pub bao: OpenBaoServer,
    /// A 3-node OpenBao cluster, with [`TestEnvBuilder::openbao_ha`].
    pub bao_ha: Option<OpenBaoCluster>,
    etcd: Etcd,
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl TestEnv {
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder {
            clusters: 2,
            dir: None,
            persistent_openbao: false,
            openbao_ha: false,
            store: None,
            nodes: None,
            token_controller: false,
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&TestCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PIDs of every process this environment runs (for orphan checks).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.clusters.iter().filter_map(TestCluster::pid).collect();
        pids.extend(self.bao.pid());
        pids.extend(self.bao_ha.iter().flat_map(OpenBaoCluster::pids));
        pids.extend(self.etcd.process.pid());
        pids.extend(self.nodes.iter().flat_map(TestNode::pids));
        pids.extend(
            self.token_controllers
                .iter()
                .filter_map(ManagedProcess::pid),
        );
        pids
    }

    /// The node of cluster `name`, with [`TestEnvBuilder::nodes`].
    pub fn node(&self, cluster: &str) -> Option<&TestNode> {
        let index = self.clusters.iter().position(|c| c.name == cluster)?;
        self.nodes.get(index)
    }
}

/// Starts every cluster's node, then waits for all of them (they come up in parallel).
fn start_nodes(
    bins: &NodeBinaries,
    clusters: &[TestCluster],
    links: Vec<NodeLink>,
    images: &[PathBuf],
) -> Result<Vec<TestNode>, TestEnvError> {
    let mut nodes = Vec::with_capacity(clusters.len());
    for (cluster, link) in clusters.iter().zip(links) {
        nodes.push(TestNode::start(bins, cluster, link, images)?);
    }
    for (node, cluster) in nodes.iter_mut().zip(clusters) {
        node.wait_ready(cluster, Duration::from_secs(180))?;
    }
    Ok(nodes)
}

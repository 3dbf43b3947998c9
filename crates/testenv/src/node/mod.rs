//! A real Kubernetes node per test cluster: containerd, runc, the CNI bridge, the kubelet and kube-proxy run in
//! pid, mount and network namespaces of their own (`unshare`), joined to the host by a veth pair; the
//! controller manager and the scheduler run beside the API server. Stopping the node kills one process, which
//! takes every container, mount, interface and iptables rule with it; only the cgroup directories are removed
//! by hand. The kubelet's machine-wide sysctls are kept inside the node's mount namespace (see node.sh).
mod config;
mod link;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use config::{KUBERNETES_SERVICE_IP, SERVICE_RANGE};
pub(crate) use link::NodeLink;

use crate::TestEnvError;
use crate::apiserver::TestCluster;
use crate::binaries::NodeBinaries;
use crate::process::ManagedProcess;

const NODE_SCRIPT: &str = include_str!("node.sh");

/// One cluster's node. Dropping it stops the node and the controllers and removes its cgroups and veth pair.
pub struct TestNode {
    /// The Node object's name (`<cluster>-node`).
    pub name: String,
    /// The node's address (its eth0), where the API server reaches the kubelet.
    pub ip: String,
    /// Logs of containerd, the kubelet and kube-proxy, and their state.
    pub dir: PathBuf,
    node: ManagedProcess,
    controllers: Vec<ManagedProcess>,
    cgroup_root: String,
    // Last: the veth goes after the node's namespace.
    _link: NodeLink,
}

impl TestNode {
    /// Starts the node of `cluster` (whose API server listens on `link`'s host address) with `images` (OCI
    /// layout tarballs) imported into containerd. Returns before the node is Ready: see [`wait_ready`].
    pub(crate) fn start(
        bins: &NodeBinaries,
        cluster: &TestCluster,
        link: NodeLink,
        images: &[PathBuf],
    ) -> Result<Self, TestEnvError> {
        let name = format!("{}-node", cluster.name);
        let cluster_dir = cluster
            .kubeconfig
            .parent()
            .map(|d| d.join(&cluster.name))
            .ok_or_else(|| TestEnvError::Node("the cluster has no directory".into()))?;
        let dir = cluster_dir.join("node");
        let cgroup_root = link.cgroup_root();
        // A node of an earlier run that was killed before it could clean up (SIGKILL) left its empty cgroups;
        // the name is ours now that we hold the link.
        remove_cgroups(&cgroup_root);
        write_files(
            bins,
            &dir,
            &cluster_dir,
            cluster,
            &name,
            &cgroup_root,
            &link.pod_subnet,
        )?;
        let controllers = start_controllers(bins, &dir, &cluster_dir, cluster)?;
        let mut args: Vec<String> = [
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--net",
            "--mount-proc",
            "--",
            "bash",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.join("node.sh").display().to_string());
        args.push(dir.display().to_string());
        args.push(link.node_if.clone());
        args.push(format!("{}/24", link.node_ip));
        args.push(link.host_ip.clone());
        args.push(cgroup_root.clone());
        args.push(bins.pause_image.display().to_string());
        args.extend(images.iter().map(|i| i.display().to_string()));
        let node = ManagedProcess::spawn(
            &format!("node {name}"),
            Path::new("unshare"),
            &args,
            dir.join("node.log"),
        )?;
        let node = Self {
            name,
            ip: link.node_ip.clone(),
            dir,
            node,
            controllers,
            cgroup_root,
            _link: link,
        };
        node.join_network()?;
        Ok(node)
    }

    /// Moves the veth's node end into the node's network namespace once `unshare` has made it.
    fn join_network(&self) -> Result<(), TestEnvError> {
        let pid = self
            .node
            .pid()
            .ok_or_else(|| TestEnvError::Node("the node process is gone".into()))?;
        let own = std::fs::read_link("/proc/self/ns/net").map_err(TestEnvError::io("/proc"))?;
        let start = Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_ref()
            == Some(&own)
        {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(TestEnvError::Node(format!(
                    "unshare made no network namespace in 10s; see {}",
                    self.dir.join("node.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self._link.move_into(pid)
    }

    /// Waits until the Node object reports Ready (the kubelet registered and the CNI config was found).
    pub(crate) fn wait_ready(
        &mut self,
        cluster: &TestCluster,
        timeout: Duration,
    ) -> Result<(), TestEnvError> {
        let path = format!("/api/v1/nodes/{}", self.name);
        self.node.wait_ready(timeout, || {
            cluster
                .get_json(&path)
                .is_some_and(|node| node_is_ready(&node))
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.node.pid().into_iter().collect();
        pids.extend(self.controllers.iter().filter_map(ManagedProcess::pid));
        pids
    }

    /// The kubelet's cgroup root (a directory name in every hierarchy): a process is on this node if its
    /// `/proc/<pid>/cgroup` lists paths under it.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The cgroup directories the kubelet made (one per hierarchy), which outlive the node's namespaces.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_root)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.node.stop();
        for c in &mut self.controllers {
            c.stop();
        }
        remove_cgroups(&self.cgroup_root);
        remove_state(&self.dir.join("var-lib"));
    }
}

/// Removes the node's container state (unpacked images, containers' layers), retried while the last
/// processes of the killed pid namespace still exit; the logs stay.
fn remove_state(dir: &Path) {
    let start = Instant::now();
    while dir.exists() && start.elapsed() < Duration::from_secs(10) {
        if std::fs::remove_dir_all(dir).is_err() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn node_is_ready(node: &serde_json::Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn write_files(
    bins: &NodeBinaries,
    dir: &Path,
    cluster_dir: &Path,
    cluster: &TestCluster,
    name: &str,
    cgroup_root: &str,
    pod_subnet: &str,
) -> Result<(), TestEnvError> {
    for sub in ["cni", "bin"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(TestEnvError::io(&d))?;
    }
    let kubeconfig = dir.join("kubeconfig");
    let files = [
        ("node.sh", NODE_SCRIPT.to_string()),
        ("node-name", name.to_string()),
        ("resolv.conf", "options ndots:1\n".to_string()),
        ("containerd.toml", config::containerd(dir)),
        ("cni/10-meshtrust.conflist", config::cni(pod_subnet)),
        (
            "kubelet.yaml",
            config::kubelet(dir, cgroup_root, &cluster_dir.join("ca.crt")),
        ),
        ("kube-proxy.yaml", config::kube_proxy(&kubeconfig, name)),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(TestEnvError::io(&path))?;
    }
    std::fs::copy(&cluster.kubeconfig, &kubeconfig).map_err(TestEnvError::io(&kubeconfig))?;
    for (bin, link) in [(&bins.kubelet, "kubelet"), (&bins.kube_proxy, "kube-proxy")] {
        let path = dir.join("bin").join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(bin, &path).map_err(TestEnvError::io(&path))?;
    }
    Ok(())
}

/// kube-controller-manager (ServiceAccounts, Deployments' ReplicaSets, the `kube-root-ca.crt` ConfigMap,
/// Endpoints) and kube-scheduler, on the host beside the API server, serving nothing themselves.
fn start_controllers(
    bins: &NodeBinaries,
    dir: &Path,
    cluster_dir: &Path,
    cluster: &TestCluster,
) -> Result<Vec<ManagedProcess>, TestEnvError> {
    let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
    let manager = vec![
        kubeconfig.clone(),
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
        format!("--cluster-name={}", cluster.name),
        format!("--root-ca-file={}", cluster_dir.join("ca.crt").display()),
        format!(
            "--service-account-private-key-file={}",
            cluster_dir.join("sa.key").display()
        ),
        format!("--service-cluster-ip-range={SERVICE_RANGE}"),
        "--v=1".to_string(),
    ];
    let scheduler = vec![
        kubeconfig,
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
        "--v=1".to_string(),
    ];
    Ok(vec![
        ManagedProcess::spawn(
            &format!("kube-controller-manager {}", cluster.name),
            &bins.kube_controller_manager,
            &manager,
            dir.join("kube-controller-manager.log"),
        )?,
        ManagedProcess::spawn(
            &format!("kube-scheduler {}", cluster.name),
            &bins.kube_scheduler,
            &scheduler,
            dir.join("kube-scheduler.log"),
        )?,
    ])
}

fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    hierarchies
        .filter_map(Result::ok)
        .map(|h| h.path().join(root))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the node's cgroup trees, deepest first. The kernel frees a cgroup only once its last task is
/// reaped, which happens just after the node's pid namespace is killed, so busy directories are retried.
fn remove_cgroups(root: &str) {
    let start = Instant::now();
    loop {
        let mut left = false;
        for dir in cgroup_dirs(root) {
            left |= !remove_tree(&dir);
        }
        if !left || start.elapsed() > Duration::from_secs(10) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// rmdir of every directory under `dir`, children first (cgroupfs refuses to remove a non-empty one).
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    std::fs::remove_dir(dir).is_ok()
}

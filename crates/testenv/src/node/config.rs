//! The configuration files of one test node's containerd, kubelet, kube-proxy and CNI.
use std::path::Path;

/// The sandbox image containerd starts for every pod (`scripts/build-image pause` names it so).
pub(crate) const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
/// The Service range of every test cluster (the `kubernetes` Service is its first address).
pub(crate) const SERVICE_RANGE: &str = "10.96.0.0/16";
pub(crate) const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// containerd 1.6 (config version 2): state in the node's private /run and /var/lib, Kubernetes' cgroupfs
/// driver, the CNI plugins where Debian puts them. `restrict_oom_score_adj`: this machine's root lacks
/// CAP_SYS_RESOURCE, so the kubelet's negative oom_score_adj for sandboxes (-998) would make runc fail
/// ("can't get final child's PID from pipe"); containerd then keeps every score at or above its own.
pub(crate) fn containerd(node_dir: &Path) -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        cni = node_dir.join("cni").display()
    )
}

/// A bridge for the node's pods (`pod_subnet`, routed to the node by the host, so the API server reaches
/// webhooks and the tests reach pods) with masquerade for what leaves the node, and hostPort support.
pub(crate) fn cni(pod_subnet: &str) -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "meshtrust-node", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{pod_subnet}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
]}}
"#
    )
}

/// kubelet 1.34 on cgroup v1 (`failCgroupV1: false`), cgroupfs under its own root, the API server's CA for
/// client certificates (`kubectl logs/exec/port-forward` go through the API server with its client
/// certificate), and small absolute eviction thresholds: the disk is the machine's, shared with builds, and a
/// percentage of it evicted the agents here once it was nearly full.
pub(crate) fn kubelet(node_dir: &Path, cgroup_root: &str, ca_file: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
resolvConf: {resolv}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "50Mi", nodefs.available: "100Mi", imagefs.available: "100Mi"}}
protectKernelDefaults: false
# A changed Secret reaches a pod's volume only when the kubelet syncs that pod: every syncFrequency (1m by
# default; a renewed cacerts took 53-83 s to reach istiod's pod here). 10 s keeps the tests' rotations short;
# docs/ca.md says what the default means for ca.rootRotation.phaseDwell.
syncFrequency: 10s
"#,
        ca = ca_file.display(),
        resolv = node_dir.join("resolv.conf").display(),
    )
}

/// kube-proxy in iptables mode (the kernel has no IPVS), changing no machine-wide conntrack setting.
pub(crate) fn kube_proxy(kubeconfig: &Path, node_name: &str) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {node_name}
clusterCIDR: 10.244.0.0/16
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
"#,
        kubeconfig = kubeconfig.display()
    )
}

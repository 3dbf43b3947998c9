use std::path::{Path, PathBuf};

use crate::TestEnvError;

/// Pinned versions; `scripts/build-k8s` builds exactly these.
pub const K8S_VERSION: &str = "v1.34.4";
pub const ETCD_VERSION: &str = "v3.6.5";
pub const OPENBAO_VERSION: &str = "2.7.2";
/// HashiCorp Vault community edition; `scripts/build-vault` builds it (patch releases do not build from the
/// published modules, see that script).
pub const VAULT_VERSION: &str = "1.21.0";
/// `istio.io/istio` pseudo-version (1.31 dev); `scripts/build-istio` builds it. The proxy serves no 1.x tags.
pub const ISTIO_VERSION: &str = "v0.0.0-20260827124520-eed52ebb66ad";

/// Where the real server binaries live: `$MESHTRUST_CACHE` (default `~/.cache/meshtrust`), filled by
/// `scripts/build-k8s`, `scripts/install-openbao` and `scripts/build-vault`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub bao: PathBuf,
    /// Required only when a test runs on Vault ([`crate::StoreKind::binary`]).
    pub vault: PathBuf,
}

impl Binaries {
    pub fn cache_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("MESHTRUST_CACHE") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".cache").join("meshtrust")
    }

    /// Finds every binary, or names the command that provides the missing one.
    pub fn locate() -> Result<Self, TestEnvError> {
        let cache = Self::cache_dir();
        let kube_apiserver = cache
            .join("bin")
            .join(format!("kube-apiserver-{K8S_VERSION}"));
        let etcd = cache.join("bin").join(format!("etcd-{ETCD_VERSION}"));
        let bao = std::env::var_os("MESHTRUST_BAO")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("bin").join(format!("bao-{OPENBAO_VERSION}")));
        let vault = std::env::var_os("MESHTRUST_VAULT")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("bin").join(format!("vault-{VAULT_VERSION}")));
        require(
            &kube_apiserver,
            "kube-apiserver",
            "scripts/build-k8s apiserver",
        )?;
        require(&etcd, "etcd", "scripts/build-k8s etcd")?;
        require(&bao, "bao (OpenBao)", "scripts/install-openbao")?;
        Ok(Self {
            kube_apiserver,
            etcd,
            bao,
            vault,
        })
    }
}

/// istiod and Istio's CRDs, filled by `scripts/build-istio`. Separate from [`Binaries`] because only the
/// istiod tests need them.
#[derive(Debug, Clone)]
pub struct IstioBinaries {
    pub pilot_discovery: PathBuf,
    /// `manifests/charts/base/files/crd-all.gen.yaml` from the same module.
    pub crds: PathBuf,
}

impl IstioBinaries {
    pub fn locate() -> Result<Self, TestEnvError> {
        let cache = Binaries::cache_dir();
        let pilot_discovery = cache
            .join("bin")
            .join(format!("pilot-discovery-{ISTIO_VERSION}"));
        let crds = cache
            .join("istio")
            .join(format!("crd-all.gen-{ISTIO_VERSION}.yaml"));
        require(
            &pilot_discovery,
            "pilot-discovery (istiod)",
            "scripts/build-istio",
        )?;
        require(&crds, "Istio's CRDs", "scripts/build-istio crds")?;
        Ok(Self {
            pilot_discovery,
            crds,
        })
    }

    /// `istioctl` of the same module (`scripts/build-istio istioctl`), for the tests that run the seeds' own
    /// `istioctl create-remote-secret`.
    pub fn istioctl() -> Result<PathBuf, TestEnvError> {
        let path = Binaries::cache_dir()
            .join("bin")
            .join(format!("istioctl-{ISTIO_VERSION}"));
        require(&path, "istioctl", "scripts/build-istio istioctl")?;
        Ok(path)
    }
}

/// kube-controller-manager alone (`scripts/build-k8s node`), for environments that run only some of its
/// controllers without a node ([`crate::TestEnvBuilder::token_controller`]).
pub(crate) fn kube_controller_manager() -> Result<PathBuf, TestEnvError> {
    let path = Binaries::cache_dir()
        .join("bin")
        .join(format!("kube-controller-manager-{K8S_VERSION}"));
    require(&path, "kube-controller-manager", "scripts/build-k8s node")?;
    Ok(path)
}

/// What a test node runs (`scripts/build-k8s node`, same version as the API server) and the pod sandbox image
/// (`scripts/build-image pause`). Separate from [`Binaries`] because only tests with nodes need them.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    /// OCI image layout of the pause image.
    pub pause_image: PathBuf,
}

impl NodeBinaries {
    pub fn locate() -> Result<Self, TestEnvError> {
        let cache = Binaries::cache_dir();
        let bin = |name: &str| cache.join("bin").join(format!("{name}-{K8S_VERSION}"));
        let found = Self {
            kubelet: bin("kubelet"),
            kube_proxy: bin("kube-proxy"),
            kube_controller_manager: bin("kube-controller-manager"),
            kube_scheduler: bin("kube-scheduler"),
            kubectl: bin("kubectl"),
            pause_image: cache
                .join("images")
                .join(format!("pause-{K8S_VERSION}.tar")),
        };
        require(&found.kubelet, "kubelet", "scripts/build-k8s node")?;
        require(&found.kube_proxy, "kube-proxy", "scripts/build-k8s node")?;
        require(
            &found.kube_controller_manager,
            "kube-controller-manager",
            "scripts/build-k8s node",
        )?;
        require(
            &found.kube_scheduler,
            "kube-scheduler",
            "scripts/build-k8s node",
        )?;
        require(&found.kubectl, "kubectl", "scripts/build-k8s node")?;
        require(
            &found.pause_image,
            "the pause image",
            "scripts/build-image pause",
        )?;
        for (tool, fix) in [
            ("containerd", "scripts/install-node-packages"),
            ("runc", "scripts/install-node-packages"),
            ("iptables", "scripts/install-node-packages"),
        ] {
            if !on_path(tool) {
                return Err(TestEnvError::MissingBinary {
                    what: "containerd, runc or iptables",
                    path: PathBuf::from(tool),
                    fix,
                });
            }
        }
        Ok(found)
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(tool).is_file())
    })
}

fn require(path: &Path, what: &'static str, fix: &'static str) -> Result<(), TestEnvError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(TestEnvError::MissingBinary {
            what,
            path: path.to_path_buf(),
            fix,
        })
    }
}

//! Real servers for meshtrust's tests and for `scripts/dev-env`: one OpenBao (or Vault, with
//! `MESHTRUST_STORE=vault`) dev server and N Kubernetes
//! "clusters" (a real kube-apiserver each, sharing one etcd under distinct prefixes), all on free loopback ports.
//!
//! Every process is a child that dies with its owner: it is killed when the [`TestEnv`] drops (also while a test
//! panics), and `setpriv --pdeathsig` kills it if the owner dies without unwinding.
#![forbid(unsafe_code)]
// Long functions hide their steps; split them (tests may `#[allow]` this).
#![deny(clippy::too_many_lines)]

mod apiserver;
mod binaries;
mod certs;
mod crds;
mod env;
mod error;
mod etcd;
pub mod istio_ca;
mod istiod;
mod kubeconfig;
mod mesh_file;
mod node;
mod openbao;
mod openbao_ha;
mod ports;
mod probe;
mod process;
mod projection;
mod proxy;
mod store;

pub use apiserver::TestCluster;
pub use binaries::{Binaries, ISTIO_VERSION, IstioBinaries, NodeBinaries, VAULT_VERSION};
pub use env::{TestEnv, TestEnvBuilder, cluster_name};
pub use error::TestEnvError;
pub use istiod::{Istiod, IstiodOptions, install_istio_crds};
pub use mesh_file::{mesh_file, mesh_file_with};
pub use node::TestNode;
pub use openbao::OpenBaoServer;
pub use openbao_ha::{OpenBaoCluster, OpenBaoNode};
pub use ports::free_port;
pub use process::dying_with_owner;
pub use proxy::{FaultProxy, ProxyMode};
pub use store::{STORE_ENV, StoreKind};

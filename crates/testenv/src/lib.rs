//! Real servers for meshtrust's tests and for `scripts/dev-env`: one OpenBao dev server and N Kubernetes
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
mod env;
mod error;
mod etcd;
mod kubeconfig;
mod mesh_file;
mod openbao;
mod ports;
mod probe;
mod process;

pub use apiserver::TestCluster;
pub use binaries::Binaries;
pub use env::{TestEnv, TestEnvBuilder, cluster_name};
pub use error::TestEnvError;
pub use mesh_file::{mesh_file, mesh_file_with};
pub use openbao::OpenBaoServer;

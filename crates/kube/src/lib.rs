//! Kubernetes access for meshtrust: connecting to a cluster from a kubeconfig (or in-cluster), and the core's
//! `Cluster` port over kube-rs with conditional writes (resourceVersion preconditions).
#![forbid(unsafe_code)]
// Long functions hide their steps; split them (tests may `#[allow]` this).
#![deny(clippy::too_many_lines)]

mod connect;
mod describe;
mod port;
mod probe;
mod rbac;

pub use connect::{ConnectError, KubeCluster, Timeouts, connect, connect_inferred, connect_with};
pub use describe::{describe, describe_watch};
pub use probe::{parse_reader_kubeconfig, probe_reader_kubeconfig};

//! In-memory doubles of OpenBao and a Kubernetes cluster behind meshtrust's ports. They keep the semantics the
//! engine relies on — KV check-and-set, create-only and resourceVersion-conditional writes, issuer-name
//! uniqueness, soft-deleted KV versions — record every call, and can be told to fail a call or to lose a race.
//! The real-server tests stay the proof; these make the engine's edge cases cheap to state.
#![forbid(unsafe_code)]
#![deny(clippy::too_many_lines)]

mod cluster;
mod faults;
mod openbao;
mod signing;

pub use cluster::{ClusterState, FakeCluster};
pub use faults::{CallLog, FakeCore};
pub use openbao::{BaoState, FakeOpenBao, KvRecord};

//! The engine both drivers share (the `apply` CLI and the per-cluster agent): observe OpenBao and the clusters
//! through the core's ports into an immutable snapshot, plan with the pure planner, apply the plan with
//! conditional writes, one applier per domain.
#![forbid(unsafe_code)]
#![deny(clippy::too_many_lines)]

mod apply;
mod engine;
mod error;
pub mod names;
mod observe;
mod outcome;
pub mod published;
mod reader;
mod snapshot;
pub mod trust_facts;

pub use apply::root_request;
pub use engine::{Engine, RotationStart, Scope};
pub use error::EngineError;
pub use names::{CACERTS, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
pub use outcome::{AppliedChange, ApplyReport};
pub use reader::desired_reader;
pub use snapshot::{PeerSync, Snapshot, SyncedKubeconfig};

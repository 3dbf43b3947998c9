//! The engine both drivers share (the `apply` CLI and the per-cluster agent): observe OpenBao and the clusters
//! through the core's ports, plan with the pure planner, apply the plan with conditional writes.
#![forbid(unsafe_code)]

mod apply;
mod error;
mod observe;
pub mod remote;
mod run;

pub use apply::{AppliedChange, ApplyReport};
pub use error::EngineError;
pub use observe::{Observation, observe};
pub use run::Engine;

/// The label every object meshtrust writes carries; objects without it are never modified.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "meshtrust";
pub const CACERTS: &str = "cacerts";

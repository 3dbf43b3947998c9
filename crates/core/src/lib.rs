//! meshtrust's pure core: the mesh file, the observed state as plain facts, and the planner that turns
//! (desired, observed) into a plan. Nothing here does IO or reads a clock; the ports it defines are
//! implemented by the OpenBao and Kubernetes clients.
#![forbid(unsafe_code)]
// Long functions hide their steps; split them (tests may `#[allow]` this).
#![deny(clippy::too_many_lines)]

pub mod auth_ownership;
pub mod bao_plan;
pub mod duration;
pub mod facts;
pub mod handover;
pub mod import_root;
pub mod istio;
pub mod legacy_token;
pub mod mesh;
pub mod names;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod ports;
pub mod remote_plan;
pub mod root_end;
pub mod rotation;
pub mod rotation_plan;
pub mod secret;
pub mod trust_facts;
pub mod trust_view;
pub mod verify;

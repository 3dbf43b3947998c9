//! `meshtrust agent`: the shared engine in a loop inside one cluster, with only that cluster's credentials and
//! its own OpenBao role. It repairs drift of the Secrets it manages from a watch, follows OpenBao by polling the
//! one-entry change index, renews what falls due, and serves health, readiness and metrics.
#![forbid(unsafe_code)]
#![deny(clippy::too_many_lines)]

mod health;
mod lease;
mod login;
mod metrics;
mod run;

pub use health::{Health, ListenError, Server};
pub use login::{JwtSource, login};
pub use run::{AgentConfig, run};

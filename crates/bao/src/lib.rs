//! A thin typed OpenBao (and Vault) HTTP client for exactly the API meshtrust uses: mounts, PKI issuers and
//! signing, KV v2 with check-and-set, policies and Kubernetes auth. It implements the core's `OpenBao` port.
#![forbid(unsafe_code)]
#![deny(clippy::too_many_lines)]

mod client;
mod config;
mod port;

pub use client::{OpenBaoClient, Response};
pub use config::{ConfigError, OpenBaoConfig};

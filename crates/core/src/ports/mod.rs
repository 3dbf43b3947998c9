//! The interfaces meshtrust's engine needs from the outside world. The OpenBao and Kubernetes clients implement
//! them; unit tests implement them in memory.

use std::fmt;

mod cluster;
mod openbao;

pub use cluster::*;
pub use openbao::*;

/// Which system an error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum System {
    OpenBao,
    Cluster(String),
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            System::OpenBao => f.write_str("OpenBao"),
            System::Cluster(name) => write!(f, "cluster {name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object changed since it was read (check-and-set or resourceVersion conflict), or already exists.
    Conflict,
    /// Authentication or authorization refused the call.
    Denied,
    /// The server could not be reached or answered 5xx.
    Unavailable,
    /// The request or the answer was malformed.
    Invalid,
    NotFound,
}

/// An error from OpenBao or a cluster, with the operation it concerned. It never carries request bodies,
/// so key material cannot leak through it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{system}: {operation}: {message}")]
pub struct PortError {
    pub system: System,
    pub kind: ErrorKind,
    pub operation: String,
    pub message: String,
}

impl PortError {
    pub fn new(
        system: System,
        kind: ErrorKind,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PortError {
            system,
            kind,
            operation: operation.into(),
            message: message.into(),
        }
    }
}

pub type PortResult<T> = Result<T, PortError>;

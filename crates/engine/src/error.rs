use meshtrust_core::plan::Blocker;
use meshtrust_core::ports::{ErrorKind, PortError};
use meshtrust_pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("{context}: {source}")]
    Pki { context: String, source: PkiError },
    #[error("the plan is blocked:\n{}", .0.iter().map(|b| format!("  - {} {}: {}\n    fix: {}", b.target, b.resource, b.reason, b.fix)).collect::<Vec<_>>().join("\n"))]
    Blocked(Vec<Blocker>),
    /// Something OpenBao or a cluster holds contradicts what meshtrust expects, and writing would make it worse.
    #[error("{0}")]
    Inconsistent(String),
    #[error("cluster {0} is in the plan but not connected")]
    UnknownCluster(String),
    /// A write landed but the change marker could not be bumped after it: peers do not learn of the write until
    /// the bump is made (an agent makes it at its next poll) or their periodic full re-read.
    #[error(
        "{what} landed, but the change marker could not be moved to say so (peers learn of it at the next bump or their full re-read): {source}"
    )]
    MarkerNotMoved {
        cluster: String,
        wrote: crate::published::Wrote,
        what: &'static str,
        source: Box<EngineError>,
    },
}

impl EngineError {
    pub fn is_conflict(&self) -> bool {
        match self {
            EngineError::Port(e) => e.kind == ErrorKind::Conflict,
            EngineError::MarkerNotMoved { source, .. } => source.is_conflict(),
            _ => false,
        }
    }

    pub(crate) fn pki(context: impl Into<String>) -> impl FnOnce(PkiError) -> Self {
        let context = context.into();
        move |source| EngineError::Pki { context, source }
    }
}

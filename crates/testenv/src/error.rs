use std::path::PathBuf;

/// Why the test environment could not start. Each variant says what to run to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    #[error("{what} not found at {path}; build or install it with `{fix}`")]
    MissingBinary {
        what: &'static str,
        path: PathBuf,
        fix: &'static str,
    },
    #[error("{what} did not become ready within {secs}s; its log is at {log}")]
    NotReady {
        what: String,
        secs: u64,
        log: PathBuf,
    },
    #[error("{what} exited early ({status}); its log is at {log}")]
    ExitedEarly {
        what: String,
        status: String,
        log: PathBuf,
    },
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("kube client: {0}")]
    Kube(String),
    /// A call to istiod (its CA over gRPC or its debug HTTP endpoints) failed.
    #[error("{0}")]
    Grpc(String),
    /// A test node (kubelet, containerd, kube-proxy in their namespaces) could not be set up.
    #[error("test node: {0}")]
    Node(String),
}

impl TestEnvError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TestEnvError::Io { path, source }
    }
}

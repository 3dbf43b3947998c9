use meshtrust_bao::ConfigError;
use meshtrust_core::mesh::MeshError;
use meshtrust_core::ports::PortError;
use meshtrust_engine::EngineError;
use meshtrust_kube::ConnectError;

/// Every way a command can fail, each with a message that names the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read the mesh file {path}: {reason} (pass --mesh FILE, default ./mesh.yaml)")]
    MeshFile { path: String, reason: String },
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    OpenBaoConfig(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Usage(String),
}

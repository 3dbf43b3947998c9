//! Turning the global flags into a ready engine: the mesh file, the OpenBao client, one client per cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};
use meshtrust_core::mesh::{MAX_MESH_FILE_BYTES, Mesh};
use meshtrust_core::ports::Cluster;
use meshtrust_engine::Engine;
use meshtrust_kube::{Timeouts, connect_with};

use crate::args::Global;
use crate::error::CliError;

pub fn load_mesh(global: &Global) -> Result<Mesh, CliError> {
    let path = &global.mesh;
    let text = read_mesh_text(path)?;
    let base = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(std::path::Path::new("."));
    Ok(Mesh::from_yaml(
        &text,
        &path.display().to_string(),
        base.to_path_buf(),
    )?)
}

/// Reads at most one byte past [`MAX_MESH_FILE_BYTES`], so a huge or endless file (`/dev/zero`) is refused
/// without being buffered.
pub fn read_mesh_text(path: &std::path::Path) -> Result<String, CliError> {
    use std::io::Read;
    let refuse = |reason: String| CliError::MeshFile {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_MESH_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() > MAX_MESH_FILE_BYTES {
        return Err(refuse(format!(
            "larger than {} MiB; a mesh file is a few KiB, check that --mesh names the right file",
            MAX_MESH_FILE_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        refuse(format!(
            "not UTF-8 text (invalid byte at offset {}); a mesh file is YAML",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The mesh file's cluster named by `--cluster`, or an error that says where it was looked for.
pub fn cluster_named<'a>(
    mesh: &'a Mesh,
    name: &str,
    global: &Global,
) -> Result<&'a meshtrust_core::mesh::ClusterSettings, CliError> {
    mesh.cluster(name).ok_or_else(|| {
        CliError::Usage(format!(
            "--cluster {name}: no such cluster in {}",
            global.mesh.display()
        ))
    })
}

pub struct Context {
    pub engine: Engine,
    pub bao: OpenBaoClient,
}

/// The OpenBao client for a mesh, credentials from the environment.
pub fn connect_openbao(mesh: &Mesh, global: &Global) -> Result<OpenBaoClient, CliError> {
    let mut config = OpenBaoConfig::from_env(
        mesh.openbao.address.as_deref(),
        mesh.openbao.namespace.as_deref(),
    )?
    .with_mesh_ca_cert(mesh.openbao.ca_cert.as_deref());
    config.allow_insecure_http = global.allow_insecure_http;
    Ok(OpenBaoClient::new(config)?.with_timeout(global.request_timeout)?)
}

pub async fn connect_all(global: &Global) -> Result<Context, CliError> {
    let mesh = load_mesh(global)?;
    let bao = connect_openbao(&mesh, global)?;
    let mut clusters: BTreeMap<String, Arc<dyn Cluster>> = BTreeMap::new();
    for c in &mesh.clusters {
        let kube = connect_with(
            &c.name,
            c.kubeconfig.as_deref(),
            c.context.as_deref(),
            Timeouts::requests(global.request_timeout),
        )
        .await?;
        clusters.insert(c.name.clone(), Arc::new(kube));
    }
    Ok(Context {
        engine: Engine::new(mesh, Arc::new(bao.clone()), clusters),
        bao,
    })
}

/// The wall clock, read by the drivers only; the planner gets the reading.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

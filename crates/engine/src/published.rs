//! What clusters publish to OpenBao for their peers: each cluster's reader kubeconfig at
//! `<kv>/<kvPath>/<cluster>` (check-and-set), and the change index that lets an idle agent poll with one read.

use std::collections::BTreeMap;

use meshtrust_core::facts::PublishedFacts;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{ErrorKind, OpenBao};
use meshtrust_core::secret::SecretBytes;
use sha2::{Digest, Sha256};

use crate::EngineError;

const INDEX_RETRIES: usize = 8;

/// Hash of what a cluster's published kubeconfig points at; a change means republish.
pub fn config_hash(server: &str, ca_pem: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(server.as_bytes());
    h.update(b"\n");
    h.update(ca_pem.unwrap_or_default().trim().as_bytes());
    hex::encode(h.finalize())
}

/// The KV path (inside the KV mount) of a cluster's published kubeconfig.
pub(crate) fn kubeconfig_path(mesh: &Mesh, cluster: &str) -> String {
    format!("{}/{cluster}", mesh.remote_secrets.kv_path)
}

/// Reads the change index: one request, whatever the number of peers.
pub async fn read_index(
    bao: &dyn OpenBao,
    mesh: &Mesh,
) -> Result<(u64, BTreeMap<String, PublishedFacts>), EngineError> {
    let Some(entry) = bao
        .kv_get(&mesh.openbao.kv_mount, &mesh.remote_secrets.index_path)
        .await?
    else {
        return Ok((0, BTreeMap::new()));
    };
    let mut published = BTreeMap::new();
    for (cluster, value) in &entry.data {
        // An entry that does not parse is treated as unpublished, so its owner republishes it.
        if let Some(p) = value
            .expose_str()
            .and_then(|t| serde_json::from_str::<PublishedFacts>(t).ok())
        {
            published.insert(cluster.clone(), p);
        }
    }
    Ok((entry.version, published))
}

/// Changes one cluster's index entry with check-and-set, retrying when another cluster bumped it meanwhile.
pub(crate) async fn update_index(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    cluster: &str,
    entry: Option<&PublishedFacts>,
) -> Result<(), EngineError> {
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    let text = entry
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| EngineError::Inconsistent(format!("cannot encode the index entry: {e}")))?;
    let mut attempt = 0;
    loop {
        let (version, mut data) = match bao.kv_get(kv, path).await? {
            Some(entry) => (entry.version, entry.data),
            // Absent, or its current version soft-deleted: start afresh, at the version CAS expects.
            None => (current_version(bao, kv, path).await?, BTreeMap::new()),
        };
        match &text {
            Some(t) => data.insert(cluster.to_string(), SecretBytes::new(t.clone())),
            None => data.remove(cluster),
        };
        match bao.kv_put(kv, path, &data, version).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict && attempt < INDEX_RETRIES => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The version a check-and-set write must name: 0 for a new entry, the current version otherwise — also when
/// that version was soft-deleted, which a data read reports as absent.
pub(crate) async fn current_version(
    bao: &dyn OpenBao,
    mount: &str,
    path: &str,
) -> Result<u64, EngineError> {
    Ok(bao
        .kv_metadata(mount, path)
        .await?
        .map(|m| m.current_version)
        .unwrap_or(0))
}

/// Reads a peer's published kubeconfig and its version.
pub async fn fetch(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    peer: &str,
) -> Result<(SecretBytes, u64), EngineError> {
    let path = kubeconfig_path(mesh, peer);
    let entry = bao
        .kv_get(&mesh.openbao.kv_mount, &path)
        .await?
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "{peer} is in the index but {}/{path} is gone; run apply again",
                mesh.openbao.kv_mount
            ))
        })?;
    let kubeconfig = entry.data.get(peer).cloned().ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "{}/{path} has no field {peer:?} holding the kubeconfig",
            mesh.openbao.kv_mount
        ))
    })?;
    Ok((kubeconfig, entry.version))
}

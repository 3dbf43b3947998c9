//! What clusters publish to OpenBao for their peers, and how peers notice.
//!
//! * Each cluster's entry `<kv>/<kvPath>/<cluster>` holds its reader kubeconfig, the API address, the token's
//!   expiry and a hash of what the kubeconfig points at. Only that cluster's agent (and the admin) may write it,
//!   so it is the truth about that cluster.
//! * The change marker `<kv>/<indexPath>` is a small entry every publisher bumps after writing its own entry,
//!   naming itself. KV v2 keeps recent versions, so an agent that saw version v reads versions v+1.. to learn
//!   who changed. Anyone may write the marker, so it is only a hint: it decides what to re-read, never what
//!   to write or delete. An idle poll is one small read of the marker, whatever the mesh's size.
//! * Membership comes from the mesh file: entries are read for the mesh file's clusters only, and names found
//!   in OpenBao are checked as DNS labels before they touch a path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use meshtrust_core::facts::PublishedFacts;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{ErrorKind, OpenBao};
use meshtrust_core::secret::SecretBytes;
use sha2::{Digest, Sha256};

use crate::EngineError;

const MARKER_RETRIES: usize = 8;
/// How many entries are read at once: enough to read 1,000 peers in a second, few enough for OpenBao.
pub(crate) const READ_CONCURRENCY: usize = 32;
/// A gap longer than this in the marker's versions means a full re-read (KV keeps about 10 versions).
const MAX_MARKER_GAP: u64 = 8;

pub const SERVER_FIELD: &str = "server";
pub const TOKEN_EXPIRES_FIELD: &str = "tokenExpires";
pub const CONFIG_HASH_FIELD: &str = "configHash";
const MARKER_CLUSTER_FIELD: &str = "cluster";

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

/// A name read from OpenBao is used in a path only if it could be a mesh file cluster name.
pub fn is_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// One cluster's published entry, as read.
#[derive(Debug, Clone)]
pub(crate) struct PublishedEntry {
    pub facts: PublishedFacts,
    pub kubeconfig: SecretBytes,
}

/// The fields of a published entry, written by its cluster.
pub(crate) fn entry_data(
    cluster: &str,
    kubeconfig: &SecretBytes,
    server: &str,
    token_expires: i64,
    config_hash: &str,
) -> BTreeMap<String, SecretBytes> {
    BTreeMap::from([
        (cluster.to_string(), kubeconfig.clone()),
        (SERVER_FIELD.to_string(), SecretBytes::new(server)),
        (
            TOKEN_EXPIRES_FIELD.to_string(),
            SecretBytes::new(token_expires.to_string()),
        ),
        (CONFIG_HASH_FIELD.to_string(), SecretBytes::new(config_hash)),
    ])
}

/// Reads one cluster's entry. `Ok(None)` when it is absent or does not have every field (an entry in an older
/// format, or a damaged one): its owner then republishes, and peers keep what they have.
pub(crate) async fn read_entry(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    cluster: &str,
) -> Result<Option<PublishedEntry>, EngineError> {
    let Some(entry) = bao
        .kv_get(&mesh.openbao.kv_mount, &kubeconfig_path(mesh, cluster))
        .await?
    else {
        return Ok(None);
    };
    let text = |k: &str| entry.data.get(k).and_then(|v| v.expose_str());
    let parsed = (|| {
        Some(PublishedEntry {
            facts: PublishedFacts {
                version: entry.version,
                token_expires: text(TOKEN_EXPIRES_FIELD)?.parse().ok()?,
                config_hash: text(CONFIG_HASH_FIELD)?.to_string(),
            },
            kubeconfig: entry.data.get(cluster)?.clone(),
        })
    })();
    if parsed.is_none() {
        tracing::warn!(
            cluster,
            version = entry.version,
            "the published entry lacks a field; treating it as unpublished"
        );
    }
    Ok(parsed)
}

/// Reads the entries of `clusters`, a bounded number at a time.
pub(crate) async fn read_entries(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    clusters: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Option<PublishedEntry>>, EngineError> {
    futures::stream::iter(clusters)
        .map(|name| async move {
            let entry = read_entry(bao, mesh, &name).await?;
            Ok::<_, EngineError>((name, entry))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// Names with a published entry that the mesh file does not list (the admin removes them). Names that are not
/// cluster names are left alone and reported.
pub(crate) async fn departed(
    bao: &dyn OpenBao,
    mesh: &Mesh,
) -> Result<BTreeSet<String>, EngineError> {
    let keys = bao
        .kv_list(&mesh.openbao.kv_mount, &mesh.remote_secrets.kv_path)
        .await?;
    Ok(keys
        .into_iter()
        .filter(|k| {
            let ok = is_cluster_name(k);
            if !ok {
                tracing::warn!(key = %k.escape_debug(), "ignoring a published entry whose name is not a cluster name");
            }
            ok && mesh.cluster(k).is_none()
        })
        .collect())
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

/// Bumps the change marker, naming `cluster`, with check-and-set so that no bump is lost to a concurrent one.
pub(crate) async fn bump_marker(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    cluster: &str,
) -> Result<(), EngineError> {
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    let data = BTreeMap::from([(MARKER_CLUSTER_FIELD.to_string(), SecretBytes::new(cluster))]);
    let mut attempt = 0;
    loop {
        let version = marker_version(bao, mesh).await?;
        match bao.kv_put(kv, path, &data, version).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict && attempt < MARKER_RETRIES => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The marker's current version (0: none yet). One small read.
pub async fn marker_version(bao: &dyn OpenBao, mesh: &Mesh) -> Result<u64, EngineError> {
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    Ok(match bao.kv_get(kv, path).await? {
        Some(entry) => entry.version,
        None => current_version(bao, kv, path).await?,
    })
}

/// Who changed since marker version `seen`, up to `current`: the named mesh clusters, or `None` when the gap is
/// too long or a version is gone (then everything is re-read).
pub async fn changed_since(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    seen: u64,
    current: u64,
) -> Result<Option<BTreeSet<String>>, EngineError> {
    if current < seen || current - seen > MAX_MARKER_GAP {
        return Ok(None);
    }
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    let mut changed = BTreeSet::new();
    for version in seen + 1..=current {
        let Some(entry) = bao.kv_get_version(kv, path, version).await? else {
            return Ok(None);
        };
        // A hint naming something that is not a mesh cluster is ignored: it cannot redirect a read.
        if let Some(name) = entry
            .data
            .get(MARKER_CLUSTER_FIELD)
            .and_then(|v| v.expose_str())
            && mesh.cluster(name).is_some()
        {
            changed.insert(name.to_string());
        }
    }
    Ok(Some(changed))
}

/// Reads a peer's published kubeconfig and its version.
pub async fn fetch(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    peer: &str,
) -> Result<(SecretBytes, u64), EngineError> {
    let entry = read_entry(bao, mesh, peer).await?.ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "{} has no complete published entry at {}/{}; run `meshtrust apply` (or let {peer}'s agent publish)",
            peer,
            mesh.openbao.kv_mount,
            kubeconfig_path(mesh, peer)
        ))
    })?;
    Ok((entry.kubeconfig, entry.facts.version))
}

/// An agent's memory of its peers' published entries across rounds, so that a round re-reads only what the
/// change marker says changed. Cloning shares it.
#[derive(Clone)]
pub struct PublishedCache(Arc<Mutex<CacheState>>);

struct CacheState {
    /// `None`: read, and not published.
    facts: BTreeMap<String, Option<PublishedFacts>>,
    /// `None`: everything is stale.
    stale: Option<BTreeSet<String>>,
}

impl Default for PublishedCache {
    fn default() -> Self {
        PublishedCache(Arc::new(Mutex::new(CacheState {
            facts: BTreeMap::new(),
            stale: None,
        })))
    }
}

impl PublishedCache {
    fn with<T>(&self, f: impl FnOnce(&mut CacheState) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn mark_stale(&self, clusters: impl IntoIterator<Item = String>) {
        self.with(|s| {
            if let Some(stale) = &mut s.stale {
                stale.extend(clusters);
            }
        });
    }

    pub fn mark_all_stale(&self) {
        self.with(|s| s.stale = None);
    }

    /// The clusters of `mesh` that must be read now: stale or never read.
    pub(crate) fn to_read(&self, mesh: &Mesh) -> Vec<String> {
        self.with(|s| {
            mesh.clusters
                .iter()
                .map(|c| c.name.clone())
                .filter(|n| match &s.stale {
                    None => true,
                    Some(stale) => stale.contains(n) || !s.facts.contains_key(n),
                })
                .collect()
        })
    }

    /// Records what was read and returns every mesh cluster's facts (those not read come from memory).
    pub(crate) fn merge(
        &self,
        mesh: &Mesh,
        read: &BTreeMap<String, Option<PublishedEntry>>,
    ) -> BTreeMap<String, PublishedFacts> {
        self.with(|s| {
            for (name, entry) in read {
                s.facts
                    .insert(name.clone(), entry.as_ref().map(|e| e.facts.clone()));
            }
            s.facts.retain(|name, _| mesh.cluster(name).is_some());
            s.stale = Some(BTreeSet::new());
            s.facts
                .iter()
                .filter_map(|(name, facts)| Some((name.clone(), facts.clone()?)))
                .collect()
        })
    }
}

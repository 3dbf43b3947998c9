//! What clusters publish to OpenBao for their peers, and how peers notice.
//!
//! * Each cluster's entry `<kv>/<kvPath>/<cluster>` holds its reader kubeconfig, the API address, the token's
//!   expiry and a hash of what the kubeconfig points at. Only that cluster's agent (and the admin) may write it,
//!   so it is the truth about that cluster.
//! * The change marker `<kv>/<indexPath>` is a small entry every publisher bumps after writing its own entry,
//!   naming itself and what it wrote (its published entry, or its trust facts during a root rotation). KV v2
//!   keeps recent versions, so an agent that saw version v reads versions v+1.. to learn who changed what. Anyone may write the marker, so it is only a hint: it decides what to re-read, never what
//!   to write or delete. An idle poll is one small read of the marker, whatever the mesh's size.
//! * Membership comes from the mesh file: entries are read for the mesh file's clusters only, and names found
//!   in OpenBao are checked as DNS labels before they touch a path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use meshtrust_core::facts::PublishedFacts;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{ErrorKind, KvMetadata, OpenBao};
use meshtrust_core::secret::SecretBytes;
use meshtrust_core::trust_facts::PublishedTrust;
use sha2::{Digest, Sha256};

use crate::EngineError;
use crate::names::{FORMAT_FIELD, FORMAT_VERSION};

/// A bump that loses its check-and-set to another is tried again, after a random pause that doubles each time
/// (up to [`MARKER_PAUSE_CAP`]): the agents of a large mesh, woken by the same change, all bump at once, and
/// retrying in step let only one of them through per round; a bump lost here hides the write from peers until
/// their next full re-read.
const MARKER_RETRIES: u32 = 12;
const MARKER_PAUSE_CAP: Duration = Duration::from_secs(1);
/// How many entries are read at once: enough to read 1,000 peers in a second, few enough for OpenBao.
pub(crate) const READ_CONCURRENCY: usize = 32;
/// A gap longer than this in the marker's versions means a full re-read (KV keeps about 10 versions).
const MAX_MARKER_GAP: u64 = 8;

pub const SERVER_FIELD: &str = "server";
pub const TOKEN_EXPIRES_FIELD: &str = "tokenExpires";
pub const CONFIG_HASH_FIELD: &str = "configHash";
/// The fields of a published entry this release writes besides the one named after the cluster.
const ENTRY_FIELDS: [&str; 4] = [
    SERVER_FIELD,
    TOKEN_EXPIRES_FIELD,
    CONFIG_HASH_FIELD,
    FORMAT_FIELD,
];
const MARKER_CLUSTER_FIELD: &str = "cluster";
/// What the writer changed; absent (as every earlier release wrote it): its published entry.
const MARKER_WROTE_FIELD: &str = "wrote";
const WROTE_TRUST: &str = "trust";

/// What a marker bump says its writer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Its published entry (reader kubeconfig).
    Entry,
    /// Its trust facts.
    Trust,
}

/// Who changed what since a marker version: the mesh clusters the bumps named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub entries: BTreeSet<String>,
    pub trust: BTreeSet<String>,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.trust.is_empty()
    }
}

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
        (
            FORMAT_FIELD.to_string(),
            SecretBytes::new(FORMAT_VERSION.to_string()),
        ),
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
    let format = text(FORMAT_FIELD)
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if format > FORMAT_VERSION {
        tracing::debug!(
            cluster,
            format,
            "a newer meshtrust wrote this entry; reading the fields this release knows"
        );
    }
    if parsed.is_none() {
        tracing::warn!(
            cluster,
            version = entry.version,
            "the published entry lacks a field; treating it as unpublished"
        );
    }
    Ok(parsed)
}

/// The fields of `current` (the entry as stored) that this release does not write for `cluster`: a newer
/// release's additions, which a rewrite keeps.
pub(crate) fn unknown_fields(
    cluster: &str,
    current: &BTreeMap<String, SecretBytes>,
) -> BTreeMap<String, SecretBytes> {
    current
        .iter()
        .filter(|(k, _)| k.as_str() != cluster && !ENTRY_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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

/// The names with a published entry (one listing of `<kvPath>/`). Names that are not cluster names are left
/// out and reported.
pub(crate) async fn published_names(
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
            ok
        })
        .collect())
}

/// Of the `listed` names with a published entry, those the mesh file does not list (the admin removes them).
pub(crate) fn departed(mesh: &Mesh, listed: &BTreeSet<String>) -> BTreeSet<String> {
    listed
        .iter()
        .filter(|k| mesh.cluster(k).is_none())
        .cloned()
        .collect()
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

/// Bumps the change marker, naming `cluster` and what it wrote, with check-and-set so that no bump is lost to a
/// concurrent one.
pub(crate) async fn bump_marker(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    cluster: &str,
    wrote: Wrote,
) -> Result<(), EngineError> {
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    let mut data = BTreeMap::from([
        (MARKER_CLUSTER_FIELD.to_string(), SecretBytes::new(cluster)),
        (
            FORMAT_FIELD.to_string(),
            SecretBytes::new(FORMAT_VERSION.to_string()),
        ),
    ]);
    if wrote == Wrote::Trust {
        data.insert(
            MARKER_WROTE_FIELD.to_string(),
            SecretBytes::new(WROTE_TRUST),
        );
    }
    let mut attempt = 0;
    let outcome = loop {
        let version = match marker_version(bao, mesh).await {
            Ok(v) => v,
            Err(e) => break Err(e),
        };
        match bao.kv_put(kv, path, &data, version).await {
            Ok(_) => break Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict && attempt < MARKER_RETRIES => {
                attempt += 1;
                tokio::time::sleep(marker_pause(attempt)).await;
            }
            Err(e) => break Err(e.into()),
        }
    };
    outcome.map_err(|source| EngineError::MarkerNotMoved {
        cluster: cluster.to_string(),
        wrote,
        // A bump naming no cluster is the one `ca rotate-root --start` makes after it created the next root.
        what: match wrote {
            _ if cluster.is_empty() => "the new root",
            Wrote::Entry => "the published entry",
            Wrote::Trust => "the trust facts",
        },
        source: Box::new(source),
    })
}

/// A random pause of up to 20 ms × 2^attempt, at most [`MARKER_PAUSE_CAP`].
fn marker_pause(attempt: u32) -> Duration {
    let cap = Duration::from_millis(20)
        .saturating_mul(1 << attempt.min(10))
        .min(MARKER_PAUSE_CAP);
    cap.mul_f64(rand::random_range(0.0..1.0))
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

/// Who changed what since marker version `seen`, up to `current`: the named mesh clusters, or `None` when the
/// gap is too long or a version is gone (then everything is re-read).
pub async fn changed_since(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    seen: u64,
    current: u64,
) -> Result<Option<Changed>, EngineError> {
    if current < seen || current - seen > MAX_MARKER_GAP {
        return Ok(None);
    }
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    let mut changed = Changed::default();
    for version in seen + 1..=current {
        let Some(entry) = bao.kv_get_version(kv, path, version).await? else {
            return Ok(None);
        };
        let field = |name: &str| entry.data.get(name).and_then(|v| v.expose_str());
        // A hint naming something that is not a mesh cluster is ignored: it cannot redirect a read.
        if let Some(name) = field(MARKER_CLUSTER_FIELD)
            && mesh.cluster(name).is_some()
        {
            let set = match field(MARKER_WROTE_FIELD) {
                Some(WROTE_TRUST) => &mut changed.trust,
                _ => &mut changed.entries,
            };
            set.insert(name.to_string());
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

/// An agent's memory of its peers' published entries and trust facts across rounds, so that a round re-reads
/// only what the change marker says changed. Cloning shares it.
#[derive(Clone, Default)]
pub struct PublishedCache(Arc<Mutex<CacheState>>);

#[derive(Default)]
struct CacheState {
    entries: Followed<PublishedFacts>,
    trust: Followed<PublishedTrust>,
}

/// What was last read of one kind of per-cluster entry, and which of it may have changed since.
struct Followed<T> {
    /// `None`: read, and absent.
    read: BTreeMap<String, Option<T>>,
    /// `None`: everything is stale.
    stale: Option<BTreeSet<String>>,
}

impl<T> Default for Followed<T> {
    fn default() -> Self {
        Followed {
            read: BTreeMap::new(),
            stale: None,
        }
    }
}

impl<T: Clone> Followed<T> {
    fn mark_stale(&mut self, clusters: impl IntoIterator<Item = String>) {
        if let Some(stale) = &mut self.stale {
            stale.extend(clusters);
        }
    }

    /// The clusters of `mesh` that must be read now: stale or never read.
    fn to_read(&self, mesh: &Mesh) -> Vec<String> {
        mesh.clusters
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| match &self.stale {
                None => true,
                Some(stale) => stale.contains(n) || !self.read.contains_key(n),
            })
            .collect()
    }

    /// Records what was read and returns every mesh cluster's present entry (those not read from memory).
    fn merge(
        &mut self,
        mesh: &Mesh,
        read: impl IntoIterator<Item = (String, Option<T>)>,
    ) -> BTreeMap<String, T> {
        self.read.extend(read);
        self.read.retain(|name, _| mesh.cluster(name).is_some());
        self.stale = Some(BTreeSet::new());
        self.read
            .iter()
            .filter_map(|(name, found)| Some((name.clone(), found.clone()?)))
            .collect()
    }
}

/// An entry read from KV at a version.
trait Versioned {
    fn version(&self) -> u64;
}

impl Versioned for PublishedFacts {
    fn version(&self) -> u64 {
        self.version
    }
}

impl Versioned for PublishedTrust {
    fn version(&self) -> u64 {
        self.version
    }
}

/// What a listing of a folder's versions can narrow.
trait Narrow {
    /// Everything is stale, and something was read before: a listing can tell what changed since.
    fn listing_helps(&self) -> bool;
    /// Narrows a full re-read to the entries whose current version is not the one last read.
    fn narrow(&mut self, listed: &BTreeMap<String, KvMetadata>);
}

impl<T: Versioned> Narrow for Followed<T> {
    fn listing_helps(&self) -> bool {
        self.stale.is_none() && !self.read.is_empty()
    }

    fn narrow(&mut self, listed: &BTreeMap<String, KvMetadata>) {
        let stale = self
            .read
            .iter()
            .filter(|(name, known)| {
                let current = listed
                    .get(*name)
                    .filter(|m| !m.current_deleted)
                    .map(|m| m.current_version);
                known.as_ref().map(Versioned::version) != current
            })
            .map(|(name, _)| name.clone())
            .collect();
        self.stale = Some(stale);
    }
}

impl PublishedCache {
    fn with<T>(&self, f: impl FnOnce(&mut CacheState) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Marks what the change marker named since the last round.
    pub fn mark_changed(&self, changed: Changed) {
        self.with(|s| {
            s.entries.mark_stale(changed.entries);
            s.trust.mark_stale(changed.trust);
        });
    }

    pub fn mark_stale(&self, clusters: impl IntoIterator<Item = String>) {
        self.with(|s| s.entries.mark_stale(clusters));
    }

    pub fn mark_trust_stale(&self, clusters: impl IntoIterator<Item = String>) {
        self.with(|s| s.trust.mark_stale(clusters));
    }

    /// Every published entry is re-read next round.
    pub fn mark_all_stale(&self) {
        self.with(|s| s.entries.stale = None);
    }

    /// Every trust fact is re-read the next time trust facts are read at all.
    pub fn mark_all_trust_stale(&self) {
        self.with(|s| s.trust.stale = None);
    }

    fn followed(s: &mut CacheState, kind: Wrote) -> &mut dyn Narrow {
        match kind {
            Wrote::Entry => &mut s.entries,
            Wrote::Trust => &mut s.trust,
        }
    }

    /// Before a full re-read of `kind` in `folder`, one listing of the folder's versions (OpenBao's
    /// `detailed-metadata`: a request per 256 entries) narrows it to the entries that changed since they were
    /// last read. Where the server offers no such listing (Vault) or it fails, every entry is read, as before.
    pub(crate) async fn narrow_full_reread(
        &self,
        bao: &dyn OpenBao,
        mesh: &Mesh,
        kind: Wrote,
        folder: &str,
    ) {
        if !self.with(|s| Self::followed(s, kind).listing_helps()) {
            return;
        }
        match bao.kv_list_metadata(&mesh.openbao.kv_mount, folder).await {
            Ok(Some(listed)) => self.with(|s| Self::followed(s, kind).narrow(&listed)),
            Ok(None) => {
                tracing::debug!(
                    folder,
                    "OpenBao offers no detailed-metadata listing; reading every entry"
                )
            }
            Err(e) => {
                tracing::debug!(folder, error = %e, "listing versions failed; reading every entry")
            }
        }
    }

    /// The clusters of `mesh` whose published entry must be read now.
    pub(crate) fn to_read(&self, mesh: &Mesh) -> Vec<String> {
        self.with(|s| s.entries.to_read(mesh))
    }

    /// The clusters of `mesh` whose trust facts must be read now.
    pub(crate) fn trust_to_read(&self, mesh: &Mesh) -> Vec<String> {
        self.with(|s| s.trust.to_read(mesh))
    }

    /// Records what was read and returns every mesh cluster's facts (those not read come from memory).
    pub(crate) fn merge(
        &self,
        mesh: &Mesh,
        read: &BTreeMap<String, Option<PublishedEntry>>,
    ) -> BTreeMap<String, PublishedFacts> {
        let read = read
            .iter()
            .map(|(name, e)| (name.clone(), e.as_ref().map(|e| e.facts.clone())));
        self.with(|s| s.entries.merge(mesh, read))
    }

    /// Records the trust facts read and returns every mesh cluster's (those not read come from memory).
    pub(crate) fn merge_trust(
        &self,
        mesh: &Mesh,
        read: BTreeMap<String, Option<PublishedTrust>>,
    ) -> BTreeMap<String, PublishedTrust> {
        self.with(|s| s.trust.merge(mesh, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_between_marker_bumps_grows_and_stays_under_its_cap() {
        for attempt in 1..=MARKER_RETRIES {
            let cap = Duration::from_millis(20 << attempt.min(10)).min(MARKER_PAUSE_CAP);
            assert!(marker_pause(attempt) <= cap, "attempt {attempt}");
        }
        assert!(marker_pause(40) <= MARKER_PAUSE_CAP);
    }

    /// A bump that keeps losing names the writer and what it wrote, so an agent can make it later.
    #[tokio::test]
    async fn a_bump_lost_for_good_says_whose_write_it_hides() {
        let yaml = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: m\nopenbao:\n  address: https://bao.example:8200\nclusters:\n  - name: a\n    network: network-a\n";
        let mesh = Mesh::from_yaml(yaml, "mesh.yaml", std::path::PathBuf::from(".")).expect("mesh");
        let bao = meshtrust_fakes::FakeOpenBao::new(0);
        bao.fail("kv_put", usize::MAX, ErrorKind::Conflict);
        let err = bump_marker(&bao, &mesh, "a", Wrote::Trust)
            .await
            .expect_err("every bump conflicts");
        let EngineError::MarkerNotMoved { cluster, wrote, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!((cluster.as_str(), *wrote), ("a", Wrote::Trust));
        assert!(err.is_conflict());
        assert!(err.to_string().contains("the trust facts landed"), "{err}");
        // The rotation's start names no cluster: what landed is the new root.
        let err = bump_marker(&bao, &mesh, "", Wrote::Entry)
            .await
            .expect_err("every bump conflicts");
        assert!(err.to_string().contains("the new root landed"), "{err}");
    }

    /// Fifty agents woken by one change bump the marker at once: every bump gets through, each its own version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_bumps_at_once_all_get_through() {
        let yaml = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: m\nopenbao:\n  address: https://bao.example:8200\nclusters:\n  - name: a\n    network: network-a\n";
        let mesh = Arc::new(
            Mesh::from_yaml(yaml, "mesh.yaml", std::path::PathBuf::from(".")).expect("mesh"),
        );
        let bao = meshtrust_fakes::FakeOpenBao::new(0);
        let bumps: Vec<_> = (0..50)
            .map(|i| {
                let (bao, mesh) = (bao.clone(), mesh.clone());
                tokio::spawn(async move {
                    bump_marker(&bao, &mesh, &format!("c{i}"), Wrote::Entry).await
                })
            })
            .collect();
        for bump in bumps {
            bump.await.expect("task").expect("bump");
        }
        assert_eq!(marker_version(&bao, &mesh).await.expect("version"), 50);
    }

    #[test]
    fn a_rewrite_keeps_the_fields_a_newer_release_added() {
        let written = entry_data(
            "cluster-a",
            &SecretBytes::new("kubeconfig"),
            "https://a",
            42,
            "hash",
        );
        assert_eq!(
            written.get(FORMAT_FIELD).and_then(|v| v.expose_str()),
            Some(FORMAT_VERSION.to_string().as_str())
        );
        let mut stored = written.clone();
        stored.insert("caBundleHash".into(), SecretBytes::new("newer"));
        let kept = unknown_fields("cluster-a", &stored);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["caBundleHash"]);
        assert!(unknown_fields("cluster-a", &written).is_empty());
    }
}

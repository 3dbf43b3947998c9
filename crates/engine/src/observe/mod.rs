//! Reading the actual state into an immutable [`Snapshot`]: OpenBao (its configuration, the roots or the shared
//! root, the change index) and every connected cluster (its `cacerts`, reader identity and remote secrets).

mod claims;
mod cluster;
mod openbao;
mod trust_facts;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshtrust_core::facts::{BaoConfigFacts, MountFacts, Observed, OpenBaoFacts};
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{Cluster, OpenBao};

use futures::StreamExt;

use crate::EngineError;
use crate::published::{
    PublishedCache, Wrote, departed, marker_version, published_names, read_entries,
};
use crate::snapshot::Snapshot;

pub(crate) use cluster::is_legacy_token;
pub(crate) use openbao::observe_roots;
pub(crate) use trust_facts::served_roots;

/// How many clusters are observed at once.
pub(crate) const CLUSTER_CONCURRENCY: usize = 16;

/// What an observation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// An agent: OpenBao's CA and the published entries, and its own cluster. Its policy cannot read
    /// OpenBao's configuration.
    Agent,
    /// The admin: OpenBao's configuration too, and every connected cluster.
    Admin,
    /// `apply --openbao-only`: OpenBao's configuration; of the clusters only how their API servers are reached
    /// (from their kubeconfigs, no request), since everything inside them is left to their agents.
    OpenBaoOnly,
}

/// Observes OpenBao and the connected clusters at `now`, as far as `reads` says. With a `cache`, peers'
/// published entries and trust facts are re-read only where it says they may have changed.
pub async fn observe(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    clusters: &BTreeMap<String, Arc<dyn Cluster>>,
    now: i64,
    reads: Reads,
    cache: Option<&PublishedCache>,
) -> Result<Snapshot, EngineError> {
    let with_config = reads != Reads::Agent;
    let no_clusters = BTreeMap::new();
    let inside = if reads == Reads::OpenBaoOnly {
        &no_clusters
    } else {
        clusters
    };
    let config = if with_config {
        openbao::observe_config(mesh, bao).await?
    } else {
        BaoConfigFacts::default()
    };
    let namespace_missing = config.namespace_exists == Some(false);
    let mut snapshot = Snapshot {
        facts: Observed {
            openbao: OpenBaoFacts {
                pki_mount: MountFacts::Absent,
                roots: vec![],
                foreign_issuers: 0,
                shared_root: None,
                import: None,
                config,
                published: BTreeMap::new(),
                departed: Default::default(),
            },
            clusters: BTreeMap::new(),
            trust: Default::default(),
            now,
        },
        roots_pem: BTreeMap::new(),
        cacerts: BTreeMap::new(),
        shared_root: None,
        import_bundle: None,
        readers: BTreeMap::new(),
        remote_secrets: BTreeMap::new(),
        index_version: 0,
        peer_kubeconfigs: BTreeMap::new(),
    };
    // Nothing can exist inside an OpenBao namespace that does not exist yet.
    if !namespace_missing {
        // The marker first: a change published after this read is seen by the next poll.
        snapshot.index_version = marker_version(bao, mesh).await?;
        // The admin lists the entries (for those that departed) and reads only the listed ones; an agent may not
        // list, and reads through its cache. `apply --openbao-only` needs none of them.
        let listed = if with_config {
            Some(published_names(bao, mesh).await?)
        } else {
            None
        };
        if reads != Reads::OpenBaoOnly {
            observe_published(mesh, bao, cache, listed.as_ref(), &mut snapshot).await?;
        }
        if let Some(listed) = &listed {
            snapshot.facts.openbao.departed = departed(mesh, listed);
        }
        openbao::observe_ca(mesh, bao, &mut snapshot, with_config).await?;
    }
    // Only connected clusters are observed: an agent connects to its own cluster alone.
    let lookups = mesh.clusters.iter().filter_map(|settings| {
        let cluster = clusters.get(&settings.name)?;
        Some(async move {
            if reads == Reads::OpenBaoOnly {
                Ok(cluster::api_only(cluster.as_ref(), settings))
            } else {
                cluster::observe_cluster(cluster.as_ref(), settings, now, reads == Reads::Admin)
                    .await
            }
        })
    });
    // Bounded, so that an admin with many clusters does not open a connection to every API server at once.
    let found: Vec<_> = futures::stream::iter(lookups)
        .buffer_unordered(CLUSTER_CONCURRENCY)
        .collect()
        .await;
    for found in found {
        let found = found?;
        let name = found.name;
        snapshot.facts.clusters.insert(name.clone(), found.facts);
        snapshot.cacerts.insert(name.clone(), found.cacerts);
        snapshot.readers.insert(name.clone(), found.reader);
        snapshot.remote_secrets.insert(name, found.remote_secrets);
    }
    // After the clusters: a cluster trusting a root OpenBao does not hold also needs the mesh's trust facts.
    if !namespace_missing && snapshot.facts.trust_facts_needed() {
        snapshot.facts.trust = trust_facts::observe_trust(mesh, bao, inside, cache).await?;
    }
    Ok(snapshot)
}

/// The mesh clusters' published entries: all of them (those `listed`, when the folder was listed), or through
/// the cache only those that may have changed.
async fn observe_published(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    cache: Option<&PublishedCache>,
    listed: Option<&BTreeSet<String>>,
    snapshot: &mut Snapshot,
) -> Result<(), EngineError> {
    let names: Vec<String> = match cache {
        Some(cache) => {
            cache
                .narrow_full_reread(bao, mesh, Wrote::Entry, &mesh.remote_secrets.kv_path)
                .await;
            cache.to_read(mesh)
        }
        None => mesh
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| listed.is_none_or(|l| l.contains(n)))
            .collect(),
    };
    let read = read_entries(bao, mesh, names).await?;
    snapshot.facts.openbao.published = match cache {
        Some(cache) => cache.merge(mesh, &read),
        None => read
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.as_ref()?.facts.clone())))
            .collect(),
    };
    snapshot.peer_kubeconfigs = read
        .into_iter()
        .filter_map(|(name, e)| {
            let e = e?;
            Some((name, (e.kubeconfig, e.facts.version)))
        })
        .collect();
    Ok(())
}

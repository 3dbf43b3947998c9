//! Reading the actual state into an immutable [`Snapshot`]: OpenBao (its configuration, the roots or the shared
//! root, the change index) and every connected cluster (its `cacerts`, reader identity and remote secrets).

mod cluster;
mod openbao;
mod trust_facts;

use std::collections::BTreeMap;
use std::sync::Arc;

use meshtrust_core::facts::{BaoConfigFacts, MountFacts, Observed, OpenBaoFacts};
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{Cluster, OpenBao};

use crate::EngineError;
use crate::published::read_index;
use crate::snapshot::Snapshot;

pub(crate) use openbao::observe_roots;

/// Observes OpenBao and the connected clusters at `now`. `with_config` also reads OpenBao's configuration,
/// which only the admin may (an agent's policy cannot read it).
pub async fn observe(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    clusters: &BTreeMap<String, Arc<dyn Cluster>>,
    now: i64,
    with_config: bool,
) -> Result<Snapshot, EngineError> {
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
                config,
                published: BTreeMap::new(),
            },
            clusters: BTreeMap::new(),
            trust: Default::default(),
            now,
        },
        roots_pem: BTreeMap::new(),
        cacerts: BTreeMap::new(),
        shared_root: None,
        readers: BTreeMap::new(),
        remote_secrets: BTreeMap::new(),
        index_version: 0,
    };
    // Nothing can exist inside an OpenBao namespace that does not exist yet.
    if !namespace_missing {
        let (version, published) = read_index(bao, mesh).await?;
        snapshot.index_version = version;
        snapshot.facts.openbao.published = published;
        openbao::observe_ca(mesh, bao, &mut snapshot).await?;
        if snapshot.facts.openbao.roots.len() > 1 {
            snapshot.facts.trust = trust_facts::observe_trust(mesh, bao, clusters).await?;
        }
    }
    // Only connected clusters are observed: an agent connects to its own cluster alone.
    let lookups = mesh.clusters.iter().filter_map(|settings| {
        let cluster = clusters.get(&settings.name)?;
        Some(cluster::observe_cluster(cluster.as_ref(), settings, now))
    });
    for found in futures::future::join_all(lookups).await {
        let found = found?;
        let name = found.name;
        snapshot.facts.clusters.insert(name.clone(), found.facts);
        snapshot.cacerts.insert(name.clone(), found.cacerts);
        snapshot.readers.insert(name.clone(), found.reader);
        snapshot.remote_secrets.insert(name, found.remote_secrets);
    }
    Ok(snapshot)
}

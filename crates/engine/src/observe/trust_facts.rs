//! Observing the mesh's trust beyond `cacerts`: every cluster's published trust facts (also of clusters this
//! engine is not connected to) and the roots each connected cluster's istiod serves. Read only once a second
//! root exists: a mesh that never rotated has nothing to publish, and its idle rounds stay one read cheaper.
//! An agent follows trust facts the way it follows published entries: through its cache, re-reading only the
//! clusters the change marker named; the admin reads every cluster's, a bounded number at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{Cluster, OpenBao};
use meshtrust_core::trust_facts::{
    PublishedTrust, ROOT_CERT_CONFIG_MAP, ROOT_CERT_KEY, TRUST_KV_FIELD, TRUST_KV_PATH, TrustFacts,
    TrustObservation, trust_kv_path,
};
use meshtrust_pki::parse_certs;

use super::CLUSTER_CONCURRENCY;
use crate::EngineError;
use crate::published::{PublishedCache, READ_CONCURRENCY, Wrote};

pub(crate) async fn observe_trust(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    clusters: &BTreeMap<String, Arc<dyn Cluster>>,
    cache: Option<&PublishedCache>,
) -> Result<TrustObservation, EngineError> {
    let names: Vec<String> = match cache {
        Some(cache) => {
            cache
                .narrow_full_reread(bao, mesh, Wrote::Trust, TRUST_KV_PATH)
                .await;
            cache.trust_to_read(mesh)
        }
        None => mesh.clusters.iter().map(|c| c.name.clone()).collect(),
    };
    let read = read_trust(bao, mesh, names).await?;
    let published = match cache {
        Some(cache) => cache.merge_trust(mesh, read),
        None => read
            .into_iter()
            .filter_map(|(name, p)| Some((name, p?)))
            .collect(),
    };
    let served = futures::stream::iter(mesh.clusters.iter().filter_map(|settings| {
        let cluster = clusters.get(&settings.name)?;
        Some(async move {
            let served = served_roots(cluster.as_ref(), &settings.istio_namespace).await?;
            Ok::<_, EngineError>((settings.name.clone(), served))
        })
    }))
    .buffer_unordered(CLUSTER_CONCURRENCY)
    .try_collect()
    .await?;
    Ok(TrustObservation {
        read: true,
        published,
        served,
    })
}

/// Reads the trust facts of `clusters`, a bounded number at a time. `None`: the cluster published none.
async fn read_trust(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    clusters: Vec<String>,
) -> Result<BTreeMap<String, Option<PublishedTrust>>, EngineError> {
    futures::stream::iter(clusters)
        .map(|name| async move {
            let path = trust_kv_path(&name);
            let published = bao
                .kv_get(&mesh.openbao.kv_mount, &path)
                .await?
                .map(|entry| PublishedTrust {
                    version: entry.version,
                    facts: entry
                        .data
                        .get(TRUST_KV_FIELD)
                        .and_then(|v| v.expose_str())
                        .and_then(|t| serde_json::from_str::<TrustFacts>(t).ok()),
                });
            Ok::<_, EngineError>((name, published))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// The fingerprints of the roots istiod serves in its Istio namespace's `istio-ca-root-cert`. istiod rewrites
/// it only after it accepted a new `root-cert.pem`, so it tells whether the reload took. `None`: no istiod
/// wrote it. A ConfigMap that does not parse serves nothing.
pub(crate) async fn served_roots(
    cluster: &dyn Cluster,
    namespace: &str,
) -> Result<Option<Vec<String>>, EngineError> {
    let Some(data) = cluster
        .get_config_map(namespace, ROOT_CERT_CONFIG_MAP)
        .await?
    else {
        return Ok(None);
    };
    let pem = data.get(ROOT_CERT_KEY).map(String::as_str).unwrap_or("");
    Ok(Some(
        parse_certs(pem, ROOT_CERT_CONFIG_MAP)
            .map(|certs| certs.into_iter().map(|c| c.facts.fingerprint).collect())
            .unwrap_or_default(),
    ))
}

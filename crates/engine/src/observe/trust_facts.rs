//! Observing the mesh's trust beyond `cacerts`: every cluster's published trust facts (also of clusters this
//! engine is not connected to) and the roots each connected cluster's istiod serves. Read only once a second
//! root exists: a mesh that never rotated has nothing to publish, and its idle rounds stay one read cheaper.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::{Cluster, OpenBao};
use meshtrust_core::trust_facts::{
    PublishedTrust, ROOT_CERT_CONFIG_MAP, ROOT_CERT_KEY, TRUST_KV_FIELD, TrustFacts,
    TrustObservation, trust_kv_path,
};
use meshtrust_pki::parse_certs;

use crate::EngineError;

pub(crate) async fn observe_trust(
    mesh: &Mesh,
    bao: &dyn OpenBao,
    clusters: &BTreeMap<String, Arc<dyn Cluster>>,
) -> Result<TrustObservation, EngineError> {
    let mut trust = TrustObservation {
        read: true,
        ..Default::default()
    };
    for settings in &mesh.clusters {
        let path = trust_kv_path(&settings.name);
        if let Some(entry) = bao.kv_get(&mesh.openbao.kv_mount, &path).await? {
            let facts = entry
                .data
                .get(TRUST_KV_FIELD)
                .and_then(|v| v.expose_str())
                .and_then(|t| serde_json::from_str::<TrustFacts>(t).ok());
            trust.published.insert(
                settings.name.clone(),
                PublishedTrust {
                    version: entry.version,
                    facts,
                },
            );
        }
        if let Some(cluster) = clusters.get(&settings.name) {
            let served = served_roots(cluster.as_ref(), &settings.istio_namespace).await?;
            trust.served.insert(settings.name.clone(), served);
        }
    }
    Ok(trust)
}

/// The fingerprints of the roots istiod serves in its Istio namespace's `istio-ca-root-cert`. istiod rewrites
/// it only after it accepted a new `root-cert.pem`, so it tells whether the reload took. `None`: no istiod
/// wrote it. A ConfigMap that does not parse serves nothing.
async fn served_roots(
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

//! Simulated peers: clusters that exist only in OpenBao, each with a published kubeconfig, written the way a
//! peer's agent publishes it. `publish` is the one place that knows main's change-detection protocol; after a
//! redesign of that protocol, change it here (and only here) so the benchmark measures what agents really write.

use std::collections::BTreeMap;

use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};
use meshtrust_core::ports::{ErrorKind, OpenBao};
use meshtrust_core::secret::SecretBytes;

const KV: &str = "secret";
const KV_PATH: &str = "istio/remote-secrets";
/// The shared change index on main at the time of writing (crates/engine/src/published.rs).
const INDEX_PATH: &str = "istio/meshtrust-index";

pub fn name(i: usize) -> String {
    format!("peer-{i}")
}

pub fn root_client(addr: &str, token: &str) -> OpenBaoClient {
    OpenBaoClient::new(OpenBaoConfig {
        address: addr.to_string(),
        token: token.to_string(),
        namespace: None,
        ca_cert_pem: None,
        allow_insecure_http: false,
    })
    .expect("OpenBao client")
}

/// The kubeconfig text a peer publishes in generation `generation` (the benchmark only checks it arrives).
pub fn kubeconfig(peer: &str, generation: u64) -> String {
    format!("kubeconfig of {peer}, generation {generation}\n")
}

fn index_entry(version: u64) -> SecretBytes {
    let entry = serde_json::json!({"version": version, "tokenExpires": 4_000_000_000i64, "configHash": "simulated"});
    SecretBytes::new(entry.to_string())
}

/// Publishes every peer's first kubeconfig, then the index naming them all in one write (as many agents would
/// leave it). An error is returned as text: at 1,000 peers OpenBao refuses main's single index entry.
pub async fn publish_all(bao: &OpenBaoClient, peers: usize) -> Result<(), String> {
    let mut index = BTreeMap::new();
    for i in 0..peers {
        let p = name(i);
        let data = BTreeMap::from([(p.clone(), SecretBytes::new(kubeconfig(&p, 0)))]);
        let version = bao
            .kv_put(KV, &format!("{KV_PATH}/{p}"), &data, 0)
            .await
            .map_err(|e| format!("publishing {p}: {e}"))?;
        index.insert(p, index_entry(version));
    }
    bao.kv_put(KV, INDEX_PATH, &index, 0)
        .await
        .map_err(|e| format!("writing the change index for {peers} peers: {e}"))?;
    Ok(())
}

/// A peer publishes a new kubeconfig version, as its agent would: the KV entry with check-and-set, then its
/// entry in the change index with check-and-set (retried when another writer won).
pub async fn publish(bao: &OpenBaoClient, peer: &str, generation: u64) -> Result<(), String> {
    let path = format!("{KV_PATH}/{peer}");
    let current = bao
        .kv_metadata(KV, &path)
        .await
        .map_err(|e| e.to_string())?
        .map(|m| m.current_version)
        .unwrap_or(0);
    let data = BTreeMap::from([(
        peer.to_string(),
        SecretBytes::new(kubeconfig(peer, generation)),
    )]);
    let version = bao
        .kv_put(KV, &path, &data, current)
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..8 {
        let (cas, mut index) = match bao
            .kv_get(KV, INDEX_PATH)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(entry) => (entry.version, entry.data),
            None => (0, BTreeMap::new()),
        };
        index.insert(peer.to_string(), index_entry(version));
        match bao.kv_put(KV, INDEX_PATH, &index, cas).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the change index kept changing while {peer} published"
    ))
}

/// The mesh file: the real cluster `cluster-a` and `peers` simulated ones whose API servers nobody dials.
pub fn mesh_file(kubeconfig: &std::path::Path, peers: usize) -> String {
    let mut text = format!(
        "apiVersion: meshtrust.dev/v1\nkind: Mesh\nclusters:\n  - name: cluster-a\n    kubeconfig: {}\n",
        kubeconfig.display()
    );
    for i in 0..peers {
        text.push_str(&format!(
            "  - name: {}\n    apiServer: https://127.0.0.1:1\n",
            name(i)
        ));
    }
    text
}

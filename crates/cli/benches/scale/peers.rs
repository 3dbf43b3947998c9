//! Simulated peers: clusters that exist only in OpenBao, each with a published kubeconfig, written the way a
//! peer's agent publishes it. `publish` is the one place that knows main's change-detection protocol; after a
//! redesign of that protocol, change it here (and only here) so the benchmark measures what agents really write.

use std::collections::BTreeMap;

use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};
use meshtrust_core::ports::{ErrorKind, OpenBao};
use meshtrust_core::secret::SecretBytes;
use meshtrust_engine::published::{CONFIG_HASH_FIELD, SERVER_FIELD, TOKEN_EXPIRES_FIELD};

const KV: &str = "secret";
const KV_PATH: &str = "istio/remote-secrets";
/// The change marker every publisher bumps (remoteSecrets.indexPath's default).
const MARKER_PATH: &str = "istio/meshtrust-index";

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
        addresses: vec![],
    })
    .expect("OpenBao client")
}

/// The kubeconfig text a peer publishes in generation `generation` (the benchmark only checks it arrives).
pub fn kubeconfig(peer: &str, generation: u64) -> String {
    format!("kubeconfig of {peer}, generation {generation}\n")
}

/// A peer's published entry, with the fields meshtrust's engine reads (crates/engine/src/published.rs).
fn entry(peer: &str, generation: u64) -> BTreeMap<String, SecretBytes> {
    BTreeMap::from([
        (
            peer.to_string(),
            SecretBytes::new(kubeconfig(peer, generation)),
        ),
        (
            SERVER_FIELD.to_string(),
            SecretBytes::new("https://127.0.0.1:1"),
        ),
        (
            TOKEN_EXPIRES_FIELD.to_string(),
            SecretBytes::new("4000000000"),
        ),
        (CONFIG_HASH_FIELD.to_string(), SecretBytes::new("simulated")),
    ])
}

/// Bumps the change marker naming `peer`, with check-and-set (retried when another writer won).
async fn bump_marker(bao: &OpenBaoClient, peer: &str) -> Result<(), String> {
    let data = BTreeMap::from([("cluster".to_string(), SecretBytes::new(peer))]);
    for _ in 0..8 {
        let cas = bao
            .kv_metadata(KV, MARKER_PATH)
            .await
            .map_err(|e| e.to_string())?
            .map(|m| m.current_version)
            .unwrap_or(0);
        match bao.kv_put(KV, MARKER_PATH, &data, cas).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the change marker kept changing while {peer} published"
    ))
}

/// Publishes every peer's first kubeconfig (its own entry each, as its agent would), then bumps the marker once.
pub async fn publish_all(bao: &OpenBaoClient, peers: usize) -> Result<(), String> {
    for i in 0..peers {
        let p = name(i);
        bao.kv_put(KV, &format!("{KV_PATH}/{p}"), &entry(&p, 0), 0)
            .await
            .map_err(|e| format!("publishing {p}: {e}"))?;
    }
    if peers > 0 {
        bump_marker(bao, &name(peers - 1)).await?;
    }
    Ok(())
}

/// A peer publishes a new kubeconfig version, as its agent does: its own entry with check-and-set, then a bump
/// of the change marker naming it.
pub async fn publish(bao: &OpenBaoClient, peer: &str, generation: u64) -> Result<(), String> {
    let path = format!("{KV_PATH}/{peer}");
    let current = bao
        .kv_metadata(KV, &path)
        .await
        .map_err(|e| e.to_string())?
        .map(|m| m.current_version)
        .unwrap_or(0);
    bao.kv_put(KV, &path, &entry(peer, generation), current)
        .await
        .map_err(|e| e.to_string())?;
    bump_marker(bao, peer).await
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

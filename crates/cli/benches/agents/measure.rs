//! What the fleet is measured on: OpenBao's load at idle, mesh-wide propagation of one cluster's publication,
//! and a root rotation the agents carry alone, with every cluster's trust sampled throughout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use meshtrust_bao::OpenBaoClient;
use meshtrust_core::ports::OpenBao;
use meshtrust_core::secret::SecretBytes;

use crate::fleet::Member;
use crate::procfs;
use crate::proxy::CountingProxy;

const KV: &str = "secret";
const KV_PATH: &str = "istio/remote-secrets";
const MARKER_PATH: &str = "istio/meshtrust-index";

/// OpenBao's load while every agent idles: requests per second through the proxy, and the CPU share of the
/// OpenBao processes (summed over nodes) over the window.
pub struct IdleLoad {
    pub requests_per_s: f64,
    pub response_bytes_per_s: f64,
    pub cpu_percent: f64,
}

pub async fn idle(proxy: &CountingProxy, bao_pids: &[u32], window: Duration) -> IdleLoad {
    let cpu = || {
        bao_pids
            .iter()
            .map(|p| procfs::cpu_seconds(*p))
            .sum::<f64>()
    };
    proxy.reset();
    let before = cpu();
    tokio::time::sleep(window).await;
    let used = cpu() - before;
    let hits = proxy.hits();
    IdleLoad {
        requests_per_s: hits.len() as f64 / window.as_secs_f64(),
        response_bytes_per_s: hits.iter().map(|h| h.bytes as f64).sum::<f64>()
            / window.as_secs_f64(),
        cpu_percent: used * 100.0 / window.as_secs_f64(),
    }
}

/// The kube clients of the fleet's API servers.
pub type Clients = Vec<kube::Client>;

/// `publisher` publishes a new kubeconfig as its agent would (its own entry with check-and-set, then a bump of
/// the marker naming it): the same text with a new token. Returns the new text.
async fn publish(bao: &OpenBaoClient, publisher: &str, sample: usize) -> Result<String, String> {
    let path = format!("{KV_PATH}/{publisher}");
    let entry = bao
        .kv_get(KV, &path)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{publisher} has published nothing"))?;
    let old = entry
        .data
        .get(publisher)
        .and_then(|v| v.expose_str())
        .ok_or_else(|| format!("{publisher}'s entry has no kubeconfig"))?;
    // A new token of the same shape: what a token refresh changes.
    let text: String = old
        .lines()
        .map(|l| match l.trim_start().strip_prefix("token: ") {
            Some(token) => {
                let keep = token.len().saturating_sub(8);
                format!(
                    "{}token: {}{:08}",
                    &l[..l.len() - l.trim_start().len()],
                    &token[..keep],
                    sample
                )
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let mut data = entry.data.clone();
    data.insert(publisher.to_string(), SecretBytes::new(text.clone()));
    bao.kv_put(KV, &path, &data, entry.version)
        .await
        .map_err(|e| e.to_string())?;
    let marker = BTreeMap::from([("cluster".to_string(), SecretBytes::new(publisher))]);
    for _ in 0..8 {
        let cas = bao
            .kv_metadata(KV, MARKER_PATH)
            .await
            .map_err(|e| e.to_string())?
            .map_or(0, |m| m.current_version);
        if bao.kv_put(KV, MARKER_PATH, &marker, cas).await.is_ok() {
            return Ok(text);
        }
    }
    Err("the change marker kept changing".into())
}

/// Whether `member` holds `peer`'s kubeconfig `text`.
async fn holds(client: &kube::Client, member: &Member, peer: &str, text: &str) -> bool {
    Api::<Secret>::namespaced(client.clone(), &member.namespace)
        .get_opt(&format!("istio-remote-secret-{peer}"))
        .await
        .ok()
        .flatten()
        .and_then(|s| s.data)
        .and_then(|d| d.get(peer).cloned())
        .is_some_and(|v| v.0 == text.as_bytes())
}

/// `samples` times, one cluster publishes and the time until every other cluster holds it (the slowest one).
pub async fn propagation(
    bao: &OpenBaoClient,
    clients: &Clients,
    members: &[Member],
    samples: usize,
    limit: Duration,
) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for s in 0..samples {
        let publisher = &members[(s * 7) % members.len()].name;
        // Spread the samples over the agents' poll phase.
        let phase = (s as f64 * 0.618_034).fract();
        tokio::time::sleep(Duration::from_millis(200 + (phase * 1000.0) as u64)).await;
        let text = publish(bao, publisher, s).await?;
        let start = Instant::now();
        let mut waiting: Vec<&Member> = members.iter().filter(|m| &m.name != publisher).collect();
        while !waiting.is_empty() && start.elapsed() < limit {
            // All at once: a sweep of 49 reads one after another took a large part of a second on the loaded
            // machine, which the slowest cluster's time included.
            let held = futures::future::join_all(
                waiting
                    .iter()
                    .map(|m| holds(&clients[m.server], m, publisher, &text)),
            )
            .await;
            waiting = waiting
                .into_iter()
                .zip(held)
                .filter(|(_, held)| !held)
                .map(|(m, _)| m)
                .collect();
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        out.push(start.elapsed().min(limit));
    }
    Ok(out)
}

/// Every member's `cacerts` as istiod would read it: (trusted root fingerprints, the root that signed it).
async fn trust(clients: &Clients, members: &[Member]) -> Vec<(Vec<String>, Option<String>)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut out = Vec::new();
    for m in members {
        let data: BTreeMap<String, SecretBytes> =
            Api::<Secret>::namespaced(clients[m.server].clone(), &m.namespace)
                .get_opt("cacerts")
                .await
                .ok()
                .flatten()
                .and_then(|s| s.data)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        SecretBytes::new(String::from_utf8_lossy(&v.0).to_string()),
                    )
                })
                .collect();
        let state = meshtrust_pki::cacerts::inspect(&data, now);
        out.push((state.trusted_roots, state.issuer_fingerprint));
    }
    out
}

/// A trust gap: some cluster's intermediate is signed by a root another cluster does not trust.
fn gap(trust: &[(Vec<String>, Option<String>)]) -> bool {
    trust.iter().any(|(_, signer)| {
        signer
            .as_ref()
            .is_none_or(|s| trust.iter().any(|(roots, _)| !roots.contains(s)))
    })
}

/// What a rotation cost.
pub struct Rotation {
    pub seconds: f64,
    pub samples: usize,
    pub gaps: usize,
}

/// Starts a rotation as the admin does (`ca rotate-root --start`), then samples every cluster's trust until all
/// trust and sign with the new root only, the agents alone carrying it.
pub async fn rotation(
    start: impl FnOnce() -> Result<Duration, String>,
    clients: &Clients,
    members: &[Member],
    limit: Duration,
) -> Result<Rotation, String> {
    let before = trust(clients, members).await;
    let old_root = before
        .first()
        .and_then(|(_, s)| s.clone())
        .ok_or("the first cluster has no cacerts")?;
    let began = Instant::now();
    start()?;
    let (mut samples, mut gaps) = (0, 0);
    while began.elapsed() < limit {
        let now = trust(clients, members).await;
        samples += 1;
        if gap(&now) {
            gaps += 1;
        }
        let settled = now.iter().all(|(roots, signer)| {
            roots.len() == 1
                && signer.as_ref() == roots.first()
                && signer.as_ref() != Some(&old_root)
        });
        if settled {
            return Ok(Rotation {
                seconds: began.elapsed().as_secs_f64(),
                samples,
                gaps,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "the rotation did not complete within {limit:?} ({gaps} gaps in {samples} samples)"
    ))
}

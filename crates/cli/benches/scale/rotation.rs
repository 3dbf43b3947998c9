//! The rotated mesh: a second root generation in OpenBao (as `ca rotate-root --start` makes it), the simulated
//! peers publishing their trust facts as their agents would, and the real cluster's agent carrying its part of
//! the rotation. Measured twice: with the rotation under way (every peer trusts the new root, none signs with
//! it yet, so the rotation waits) and after it (every cluster on the new root only).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use meshtrust_bao::OpenBaoClient;
use meshtrust_core::mesh::Mesh;
use meshtrust_core::ports::OpenBao;
use meshtrust_core::secret::SecretBytes;
use meshtrust_core::trust_facts::{Mark, TRUST_KV_FIELD, TrustFacts, trust_kv_path};
use meshtrust_testenv::TestEnv;

use crate::{agent, peers};

const KV: &str = "secret";

/// Where the rotated rows stand.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Every cluster trusts both roots; the peers still sign with the old one, so the rotation waits.
    UnderWay,
    /// Every cluster trusts and signs with the new root only.
    Settled,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::UnderWay => "under way",
            Stage::Settled => "settled",
        }
    }
}

/// The two roots' fingerprints, oldest first.
pub struct Roots {
    old: String,
    new: String,
}

fn load_mesh(path: &Path) -> Result<Mesh, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Mesh::from_yaml(&text, &path.display().to_string(), base).map_err(|e| e.to_string())
}

/// Generates root 2 as `ca rotate-root --start` does (then the admin's `apply --openbao-only`, timed, writes
/// the policies that let agents sign with it) and bumps the marker naming no cluster.
pub async fn start(env: &TestEnv, mesh_path: &Path) -> Result<(Roots, agent::Applied), String> {
    let mesh = load_mesh(mesh_path)?;
    let bao = peers::root_client(&env.bao.addr, &env.bao.root_token);
    let pki = &mesh.openbao.pki_mount;
    bao.generate_root(pki, &meshtrust_engine::root_request(&mesh, 2))
        .await
        .map_err(|e| e.to_string())?;
    let applied = agent::apply_openbao_only(env, mesh_path).await?;
    peers::bump_marker(&bao, "", false).await?;
    let mut fingerprints = Vec::new();
    for name in ["meshtrust-root-1", "meshtrust-root-2"] {
        let issuer = bao
            .list_issuers(pki)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|i| i.issuer_name == name)
            .ok_or_else(|| format!("{name} is not in {pki}"))?;
        let cert = meshtrust_pki::parse_certs(&issuer.certificate_pem, name)
            .map_err(|e| e.to_string())?
            .remove(0);
        fingerprints.push(cert.facts.fingerprint);
    }
    let new = fingerprints.pop().unwrap_or_default();
    let old = fingerprints.pop().unwrap_or_default();
    Ok((Roots { old, new }, applied))
}

/// What every simulated peer publishes at `stage`, `since` being when it reached it.
fn peer_facts(roots: &Roots, stage: Stage, since: i64) -> TrustFacts {
    let mark = |at| {
        Some(Mark {
            root: roots.new.clone(),
            at,
        })
    };
    match stage {
        Stage::UnderWay => TrustFacts {
            trusted_roots: vec![roots.old.clone(), roots.new.clone()],
            signing_root: Some(roots.old.clone()),
            served_roots: None,
            trusts_since: mark(since),
            signs_since: None,
            settled_since: None,
            published_at: Some(since),
            ..TrustFacts::default()
        },
        // Signing with the new root for longer than the dwell already: the real cluster is the last to move.
        Stage::Settled => TrustFacts {
            trusted_roots: vec![roots.new.clone()],
            signing_root: Some(roots.new.clone()),
            served_roots: None,
            trusts_since: mark(since - 3600),
            signs_since: mark(since - 3600),
            settled_since: mark(since),
            published_at: Some(since),
            ..TrustFacts::default()
        },
    }
}

/// Every peer publishes its trust facts (check-and-set, a bounded number at a time, as many agents would at
/// once) and bumps the change marker naming itself, as its agent does. A thousand bumps are more than the marker
/// keeps, so the real agent sees a gap and re-reads every trust fact (narrowed by the listing of versions).
pub async fn publish(
    bao: &OpenBaoClient,
    count: usize,
    roots: &Roots,
    stage: Stage,
) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let text = serde_json::to_string(&peer_facts(roots, stage, now)).map_err(|e| e.to_string())?;
    let data =
        std::collections::BTreeMap::from([(TRUST_KV_FIELD.to_string(), SecretBytes::new(text))]);
    futures::stream::iter(0..count)
        .map(|i| {
            let data = &data;
            async move {
                let path = trust_kv_path(&peers::name(i));
                let cas = bao
                    .kv_metadata(KV, &path)
                    .await
                    .map_err(|e| e.to_string())?
                    .map_or(0, |m| m.current_version);
                bao.kv_put(KV, &path, data, cas)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    // One bump per publisher, one after the other (concurrent bumps would only retry each other's
    // check-and-set).
    for i in 0..count {
        peers::bump_marker(bao, &peers::name(i), true).await?;
    }
    Ok(())
}

/// Waits until the real cluster's agent has published that it reached `stage`: signing with the new root
/// (under way: then it waits for its peers), or trusting it alone (settled).
pub async fn wait_for_agent(
    bao: &OpenBaoClient,
    stage: Stage,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let facts = bao
            .kv_get(KV, &trust_kv_path("cluster-a"))
            .await
            .ok()
            .flatten()
            .and_then(|e| e.data.get(TRUST_KV_FIELD)?.expose_str().map(str::to_string))
            .and_then(|t| serde_json::from_str::<TrustFacts>(&t).ok());
        let reached = facts.is_some_and(|f| match stage {
            Stage::UnderWay => f.signs_since.is_some(),
            Stage::Settled => f.settled_since.is_some(),
        });
        if reached {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "cluster-a's agent did not reach the rotation stage \"{}\" within {limit:?}",
        stage.label()
    ))
}

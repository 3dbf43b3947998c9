use std::process::ExitCode;

use meshtrust_core::facts::CacertsFacts;
use meshtrust_core::verify::{Finding, verify_remote_secrets, verify_trust, warnings};
use meshtrust_engine::Snapshot;
use serde::Serialize;
use serde_json::json;

use crate::args::{Global, VerifyArgs};
use crate::context::{connect_all, now};
use crate::error::CliError;
use crate::output::emit;

/// One cluster's line in `verify` and `status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    pub cluster: String,
    pub roots: String,
    pub ca_serial: String,
    pub ca_not_after: Option<i64>,
    pub peers_synced: String,
    pub token_expires: Option<i64>,
}

/// RFC 3339 plus how far away, for people; JSON keeps the Unix seconds.
fn date(t: Option<i64>, now: i64) -> String {
    t.map(|t| meshtrust_core::duration::when(t, now))
        .unwrap_or_else(|| "-".into())
}

pub fn rows(mesh: &meshtrust_core::mesh::Mesh, observation: &Snapshot) -> Vec<ClusterRow> {
    mesh.clusters
        .iter()
        .map(|c| {
            let facts = observation.facts().clusters.get(&c.name);
            let (roots, ca_serial, ca_not_after) = match facts.map(|f| &f.cacerts) {
                Some(CacertsFacts::Managed(s)) => (
                    s.trusted_roots
                        .iter()
                        .map(|f| f.get(..12).unwrap_or(f))
                        .collect::<Vec<_>>()
                        .join("+"),
                    s.ca_cert
                        .as_ref()
                        .map(|c| c.serial.clone())
                        .unwrap_or_default(),
                    s.ca_cert.as_ref().map(|c| c.not_after),
                ),
                Some(CacertsFacts::Unmanaged) => ("(unmanaged)".into(), "-".into(), None),
                _ => ("-".into(), "-".into(), None),
            };
            let peers = mesh.clusters.len().saturating_sub(1);
            let synced = facts
                .map(|f| {
                    mesh.clusters
                        .iter()
                        .filter(|p| p.name != c.name)
                        .filter(|p| {
                            let published = observation
                                .facts()
                                .openbao
                                .published
                                .get(&p.name)
                                .map(|x| x.version);
                            f.remote_secrets.get(&p.name).is_some_and(|s| {
                                s.managed && s.kv_version.is_some() && s.kv_version == published
                            })
                        })
                        .count()
                })
                .unwrap_or(0);
            ClusterRow {
                cluster: c.name.clone(),
                roots,
                ca_serial,
                ca_not_after,
                peers_synced: format!("{synced}/{peers}"),
                token_expires: observation
                    .facts()
                    .openbao
                    .published
                    .get(&c.name)
                    .map(|p| p.token_expires),
            }
        })
        .collect()
}

pub fn table(rows: &[ClusterRow], now: i64) -> String {
    let mut out = format!(
        "{:<14} {:<28} {:<18} {:<6} {:<36} {}\n",
        "CLUSTER", "ROOT(S) sha256", "CA SERIAL", "PEERS", "CA EXPIRES", "READER TOKEN EXPIRES"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<14} {:<28} {:<18} {:<6} {:<36} {}\n",
            r.cluster,
            r.roots,
            r.ca_serial.get(..17).unwrap_or(&r.ca_serial),
            r.peers_synced,
            date(r.ca_not_after, now),
            date(r.token_expires, now)
        ));
    }
    out
}

/// Uses every synced kubeconfig the way the peer's istiod would.
async fn reachability(mesh: &meshtrust_core::mesh::Mesh, observation: &Snapshot) -> Vec<Finding> {
    let mut probes = Vec::new();
    for synced in observation.synced_kubeconfigs() {
        if mesh.cluster(synced.peer).is_none() {
            continue;
        }
        let kubeconfig = synced.kubeconfig.to_string();
        let (cluster, peer, name, ns) = (
            synced.cluster.to_string(),
            synced.peer.to_string(),
            synced.secret_name.to_string(),
            synced.namespace.to_string(),
        );
        probes.push(async move {
            meshtrust_kube::probe_reader_kubeconfig(&kubeconfig).await.err().map(|why| Finding {
                cluster,
                object: format!("Secret {ns}/{name}"),
                problem: format!("its kubeconfig cannot read {peer}: {why}"),
                fix: format!("check {peer}'s reader ServiceAccount and RBAC, then run `meshtrust apply` to publish a fresh token"),
            })
        });
    }
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

pub async fn run(global: &Global, _args: VerifyArgs) -> Result<ExitCode, CliError> {
    let ctx = connect_all(global).await?;
    let mesh = ctx.engine.mesh();
    let observation = ctx.engine.observe(now()).await?;
    let mut findings = verify_trust(mesh, observation.facts());
    findings.extend(verify_remote_secrets(mesh, observation.facts()));
    findings.extend(reachability(mesh, &observation).await);
    let rows = rows(mesh, &observation);
    let warnings = warnings(mesh, observation.facts());
    let ok = findings.is_empty();
    emit(
        global.output,
        &json!({ "ok": ok, "clusters": rows, "findings": findings, "warnings": warnings }),
        || {
            let mut out = table(&rows, observation.facts().now);
            for w in &warnings {
                out.push_str(&format!("\nWARN {w}\n"));
            }
            if ok {
                out.push_str("\nOK: same roots everywhere, every chain verifies, every key matches, every peer's remote secret is current and can read its cluster.\n");
            } else {
                out.push_str(&format!("\n{} finding(s):\n", findings.len()));
                for f in &findings {
                    out.push_str(&format!(
                        "  FAIL {} {}: {}\n       fix: {}\n",
                        f.cluster, f.object, f.problem, f.fix
                    ));
                }
            }
            out
        },
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

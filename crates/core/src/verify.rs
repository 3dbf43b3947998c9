//! Consistency checks over observed facts: what `meshtrust verify` reports. Pure, like the planner.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::duration::humanize;
use crate::facts::{CacertsFacts, CacertsState, ClusterFacts, Observed};
use crate::mesh::{CaMode, ClusterSettings, Mesh};
use crate::names::{CACERTS, remote_secret_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub cluster: String,
    pub object: String,
    pub problem: String,
    pub fix: String,
}

fn short(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

pub fn verify_trust(mesh: &Mesh, observed: &Observed) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut states = Vec::new();
    for cluster in &mesh.clusters {
        let object = format!("Secret {}/{CACERTS}", cluster.istio_namespace);
        let finding = |problem: String, fix: &str| Finding {
            cluster: cluster.name.clone(),
            object: object.clone(),
            problem,
            fix: fix.to_string(),
        };
        match observed.clusters.get(&cluster.name).map(|f| &f.cacerts) {
            None | Some(CacertsFacts::Absent) => {
                findings.push(finding("is missing, so istiod signs with a self-signed CA no peer trusts".into(), "run `meshtrust apply`"))
            }
            Some(CacertsFacts::Unmanaged) => findings.push(finding(
                "is not managed by meshtrust".into(),
                "run `meshtrust apply --adopt` to manage it, or remove the cluster from the mesh file",
            )),
            Some(CacertsFacts::Managed(state)) => {
                for (problem, fix) in bundle_problems(mesh, observed, state) {
                    findings.push(finding(problem, fix));
                }
                states.push((cluster.name.clone(), object.clone(), state));
            }
        }
    }
    findings.extend(cross_cluster_findings(&states));
    findings
}

/// What is wrong with one managed bundle on its own, as (problem, fix).
fn bundle_problems(
    mesh: &Mesh,
    observed: &Observed,
    state: &CacertsState,
) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for p in &state.problems {
        out.push((
            p.clone(),
            "run `meshtrust apply` to re-issue a valid bundle",
        ));
    }
    if let Some(cert) = &state.ca_cert {
        let remaining = cert.not_after.saturating_sub(observed.now);
        let renew_before = mesh.ca.intermediate.renew_before.seconds() as i64;
        if remaining <= 0 {
            out.push((
                format!(
                    "the CA certificate (serial {}) expired {} ago",
                    cert.serial,
                    humanize(remaining.saturating_neg())
                ),
                "run `meshtrust apply` to renew it now",
            ));
        } else if mesh.ca.mode == CaMode::BaoPki
            && remaining < renew_before
            && renewal_helps(mesh, observed, state, cert.not_after)
        {
            out.push((
                format!(
                    "the intermediate (serial {}) expires in {}, within renewBefore {}",
                    cert.serial,
                    humanize(remaining),
                    mesh.ca.intermediate.renew_before
                ),
                "run `meshtrust apply` (or let the agent) renew it",
            ));
        }
    }
    if mesh.ca.mode == CaMode::BaoPki {
        for fp in &state.trusted_roots {
            if observed.openbao.root_by_fingerprint(fp).is_none() {
                out.push((
                    format!(
                        "root-cert.pem holds a root OpenBao does not know (sha256 {})",
                        short(fp)
                    ),
                    "run `meshtrust apply` to rewrite it from OpenBao",
                ));
            }
        }
    }
    out
}

/// False when the intermediate already ends with its root, so renewing cannot help (the root-end warning
/// from [`warnings`] says what to do instead).
fn renewal_helps(mesh: &Mesh, observed: &Observed, state: &CacertsState, not_after: i64) -> bool {
    let root = state
        .issuer_fingerprint
        .as_deref()
        .and_then(|fp| observed.openbao.root_by_fingerprint(fp));
    root.is_none_or(|root| {
        crate::root_end::renewal_extends(
            not_after,
            observed.now,
            mesh.ca.intermediate.ttl,
            root.cert.not_after,
        )
    })
}

/// What `verify` and `status` print as warnings: true now, but needing action before a date (a root close to
/// its end). They do not fail `verify`.
pub fn warnings(mesh: &Mesh, observed: &Observed) -> Vec<String> {
    if mesh.ca.mode != CaMode::BaoPki {
        return Vec::new();
    }
    crate::root_end::root_end_warning(mesh, &observed.openbao, observed.now)
        .into_iter()
        .collect()
}

/// Cross-cluster trust over the managed bundles, as (cluster, object, bundle).
fn cross_cluster_findings(states: &[(String, String, &CacertsState)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Cross-cluster trust: every cluster's issuer must be in every other cluster's root-cert.pem.
    for (name, object, state) in states {
        for (peer, _, peer_state) in states {
            if let Some(issuer) = &peer_state.issuer_fingerprint
                && !state.trusted_roots.contains(issuer)
            {
                findings.push(Finding {
                    cluster: name.clone(),
                    object: object.clone(),
                    problem: format!(
                        "does not trust the root (sha256 {}) that signed {peer}'s CA; workloads from {peer} fail with `unknown authority`",
                        short(issuer)
                    ),
                    fix: "run `meshtrust apply` so every cluster holds the mesh's roots".into(),
                });
            }
        }
    }
    let bundles: BTreeSet<&Vec<String>> = states.iter().map(|(_, _, s)| &s.trusted_roots).collect();
    if bundles.len() > 1 {
        let detail: Vec<String> = states
            .iter()
            .map(|(n, _, s)| {
                format!(
                    "{n}: {}",
                    s.trusted_roots
                        .iter()
                        .map(|f| short(f))
                        .collect::<Vec<_>>()
                        .join("+")
                )
            })
            .collect();
        findings.push(Finding {
            cluster: "*".into(),
            object: "root-cert.pem".into(),
            problem: format!(
                "clusters hold different root bundles ({})",
                detail.join(", ")
            ),
            fix: "run `meshtrust apply`; during `ca rotate-root` this is expected between phases"
                .into(),
        });
    }
    findings
}

/// Remote secrets: every cluster holds every peer's, current with OpenBao, with a token that has not expired.
pub fn verify_remote_secrets(mesh: &Mesh, observed: &Observed) -> Vec<Finding> {
    let mut findings = Vec::new();
    for cluster in &mesh.clusters {
        let Some(facts) = observed.clusters.get(&cluster.name) else {
            continue;
        };
        for peer in mesh.clusters.iter().filter(|p| p.name != cluster.name) {
            let object = format!(
                "Secret {}/{}",
                cluster.istio_namespace,
                remote_secret_name(&peer.name)
            );
            let finding = |problem: String, fix: &str| Finding {
                cluster: cluster.name.clone(),
                object: object.clone(),
                problem,
                fix: fix.to_string(),
            };
            let published = observed.openbao.published.get(&peer.name);
            match (facts.remote_secrets.get(&peer.name), published) {
                (_, None) => findings.push(finding(
                    format!("{} has not published its kubeconfig to OpenBao", peer.name),
                    "run `meshtrust apply`",
                )),
                (None, Some(_)) => findings.push(finding(
                    format!(
                        "is missing, so istiod in {} does not see {}'s endpoints",
                        cluster.name, peer.name
                    ),
                    "run `meshtrust apply`",
                )),
                (Some(s), Some(p)) => {
                    if s.kv_version != Some(p.version) {
                        findings.push(finding(
                            format!(
                                "is stale: synced from KV version {}, OpenBao has version {}",
                                s.kv_version
                                    .map(|v| v.to_string())
                                    .unwrap_or_else(|| "?".into()),
                                p.version
                            ),
                            "run `meshtrust apply`",
                        ));
                    }
                    if p.token_expires <= observed.now {
                        findings.push(finding(
                            format!(
                                "{}'s published reader token expired {} ago",
                                peer.name,
                                humanize(observed.now.saturating_sub(p.token_expires))
                            ),
                            "run `meshtrust apply` to publish a fresh token",
                        ));
                    }
                }
            }
        }
        departed_peers(mesh, cluster, facts, &mut findings);
    }
    findings
}

/// A managed remote secret of a peer that left keeps istiod connected to a cluster outside the mesh.
fn departed_peers(
    mesh: &Mesh,
    cluster: &ClusterSettings,
    facts: &ClusterFacts,
    findings: &mut Vec<Finding>,
) {
    for (peer, existing) in &facts.remote_secrets {
        let in_mesh = peer != &cluster.name && mesh.cluster(peer).is_some();
        if existing.managed && !in_mesh {
            findings.push(Finding {
                cluster: cluster.name.clone(),
                object: format!(
                    "Secret {}/{}",
                    cluster.istio_namespace,
                    remote_secret_name(peer)
                ),
                problem: format!(
                    "is left from {peer}, which is no longer in the mesh file, so istiod still reads that cluster"
                ),
                fix: "run `meshtrust apply` (or let the agent) delete it".to_string(),
            });
        }
    }
}

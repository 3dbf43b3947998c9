use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::bao_plan::{AGENT_ROLE, desired_role};
use crate::facts::{
    AuthFacts, BaoConfigFacts, CertFacts, ClusterApiFacts, ObjectState, OpenBaoFacts, ReaderFacts,
    RootIssuerFacts,
};
use crate::mesh::{KeySpec, KeyType, SecretFormat};
use crate::policy::{ADMIN_POLICY, admin_policy, agent_policy, agent_policy_name};

mod import_root;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn mesh(extra: &str) -> Mesh {
    let text = format!(
        "apiVersion: meshtrust.dev/v1\nkind: Mesh\n{extra}clusters:\n  - name: cluster-a\n    kubeconfig: a\n  - name: cluster-b\n    kubeconfig: b\n"
    );
    Mesh::from_yaml(&text, "mesh.yaml", PathBuf::from("/")).expect("valid mesh")
}

fn root(generation: u32) -> RootIssuerFacts {
    RootIssuerFacts {
        generation,
        issuer_id: format!("id-{generation}"),
        cert: CertFacts {
            serial: format!("r{generation}"),
            fingerprint: format!("root-fp-{generation}"),
            subject_cn: "root".into(),
            not_before: NOW - DAY,
            not_after: NOW + 3650 * DAY,
            key: Some(KeySpec {
                key_type: KeyType::Rsa,
                bits: 4096,
            }),
            is_ca: true,
        },
        key_internal: true,
    }
}

fn intermediate(
    cluster: &str,
    signed_by: u32,
    trust: &[u32],
    expires_in_days: i64,
) -> ClusterFacts {
    ClusterFacts {
        namespace_exists: true,
        cacerts: CacertsFacts::Managed(CacertsState {
            format: SecretFormat::Istio,
            ca_cert: Some(CertFacts {
                serial: format!("{cluster}-{signed_by}"),
                fingerprint: format!("int-{cluster}-{signed_by}"),
                subject_cn: format!("{cluster} intermediate CA (mesh1)"),
                not_before: NOW - DAY,
                not_after: NOW + expires_in_days * DAY,
                key: Some(KeySpec {
                    key_type: KeyType::Ec,
                    bits: 256,
                }),
                is_ca: true,
            }),
            issuer_fingerprint: Some(format!("root-fp-{signed_by}")),
            trusted_roots: trust.iter().map(|g| format!("root-fp-{g}")).collect(),
            trusted_not_before: vec![],
            problems: vec![],
        }),
        api: api(),
        reader: settled_reader(),
        remote_secrets: BTreeMap::new(),
        desired_config_hash: String::new(),
        claims: BTreeMap::new(),
        legacy_reader_token: false,
        unmanaged_roots: vec![],
    }
}

fn with_cacerts(cacerts: CacertsFacts) -> ClusterFacts {
    ClusterFacts {
        namespace_exists: true,
        cacerts,
        api: api(),
        reader: settled_reader(),
        remote_secrets: BTreeMap::new(),
        desired_config_hash: String::new(),
        claims: BTreeMap::new(),
        legacy_reader_token: false,
        unmanaged_roots: vec![],
    }
}

/// A cluster with nothing of meshtrust's in it yet.
fn empty_cluster() -> ClusterFacts {
    ClusterFacts {
        namespace_exists: false,
        ..with_cacerts(CacertsFacts::Absent)
    }
}

fn settled_reader() -> ReaderFacts {
    let ok = ObjectState::Managed { up_to_date: true };
    ReaderFacts {
        service_account: ok,
        cluster_role: ok,
        binding: ok,
    }
}

fn api() -> ClusterApiFacts {
    ClusterApiFacts {
        server: "https://api:6443".into(),
        ca_pem: Some("CA".into()),
    }
}

/// OpenBao's configuration exactly as `mesh` wants it, so CA tests see only CA changes.
fn settled(mesh: &Mesh, observed: &Observed) -> BaoConfigFacts {
    let roots = crate::bao_plan::policy_roots(mesh, &observed.openbao.roots);
    let mut config = BaoConfigFacts {
        namespace_exists: mesh.openbao.namespace.as_ref().map(|_| true),
        kv_mount: Some(MountFacts::Present {
            kind: "kv".into(),
            max_lease_ttl: 0,
        }),
        ..Default::default()
    };
    for c in &mesh.clusters {
        let api = observed
            .clusters
            .get(&c.name)
            .map(|f| f.api.clone())
            .unwrap_or_default();
        config.auth.insert(
            c.name.clone(),
            AuthFacts {
                kind: Some("kubernetes".into()),
                description: crate::names::auth_mount_description(&c.name),
                kubernetes_host: Some(crate::bao_plan::desired_host(c, &api.server)),
                kubernetes_ca_cert: api.ca_pem,
                role: Some(desired_role(mesh, c)),
                other_roles: Some(vec![]),
            },
        );
        config.policies.insert(
            agent_policy_name(&c.name),
            Some(agent_policy(mesh, c, &roots)),
        );
    }
    config
        .policies
        .insert(ADMIN_POLICY.into(), Some(admin_policy(mesh, &roots)));
    config
}

/// Every observed cluster published with a long-lived token, and every peer synced.
fn settle_remote_secrets(observed: &mut Observed) {
    let names: Vec<String> = observed.clusters.keys().cloned().collect();
    for name in &names {
        observed.openbao.published.insert(
            name.clone(),
            crate::facts::PublishedFacts {
                version: 1,
                token_expires: NOW + 30 * DAY,
                config_hash: String::new(),
            },
        );
    }
    for (name, facts) in observed.clusters.iter_mut() {
        for peer in names.iter().filter(|p| *p != name) {
            facts.remote_secrets.insert(
                peer.clone(),
                crate::facts::RemoteSecretFacts {
                    managed: true,
                    kv_version: Some(1),
                },
            );
        }
    }
}

fn plan_for(mesh: &Mesh, observed: &Observed, options: PlanOptions) -> Plan {
    let mut observed = observed.clone();
    for c in observed.clusters.values_mut() {
        c.api = api();
    }
    observed.openbao.config = settled(mesh, &observed);
    settle_remote_secrets(&mut observed);
    plan(mesh, &observed, options)
}

fn observed(roots: Vec<RootIssuerFacts>, clusters: Vec<(&str, ClusterFacts)>) -> Observed {
    Observed {
        openbao: OpenBaoFacts {
            pki_mount: MountFacts::Present {
                kind: "pki".into(),
                max_lease_ttl: 87600 * 3600,
            },
            roots,
            foreign_issuers: 0,
            shared_root: None,
            import: None,
            config: BaoConfigFacts::default(),
            published: BTreeMap::new(),
            departed: Default::default(),
        },
        clusters: clusters
            .into_iter()
            .map(|(n, f)| (n.to_string(), f))
            .collect::<BTreeMap<_, _>>(),
        trust: Default::default(),
        now: NOW,
    }
}

fn actions(plan: &Plan) -> Vec<&Action> {
    plan.changes.iter().map(|c| &c.action).collect()
}

#[test]
fn empty_openbao_and_clusters_plan_everything_in_order() {
    let mut obs = observed(
        vec![],
        vec![
            ("cluster-a", empty_cluster()),
            ("cluster-b", empty_cluster()),
        ],
    );
    obs.openbao.pki_mount = MountFacts::Absent;
    let plan = plan_for(&mesh(""), &obs, PlanOptions::default());
    let a = actions(&plan);
    assert!(matches!(a[0], Action::EnablePkiMount { .. }));
    assert!(matches!(a[1], Action::GenerateRoot { generation: 1, .. }));
    assert!(matches!(a[2], Action::CreateNamespace { .. }));
    assert_eq!(
        a[3],
        &Action::IssueIntermediate {
            cluster: "cluster-a".into(),
            signing: 1,
            trust: vec![1],
            keep: vec![],
            adopt: false
        }
    );
    assert_eq!(plan.changes.len(), 6);
    assert!(plan.warnings.iter().any(|w| w.contains("restart")));
    let text = plan.to_string();
    assert!(
        text.contains("Plan: 6 to create, 0 to update, 0 to delete."),
        "{text}"
    );
}

#[test]
fn consistent_mesh_plans_nothing() {
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let plan = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert!(plan.is_empty(), "{plan}");
    assert!(plan.to_string().contains("No changes"));
}

#[test]
fn short_mount_ttl_is_tuned() {
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    obs.openbao.pki_mount = MountFacts::Present {
        kind: "pki".into(),
        max_lease_ttl: 768 * 3600,
    };
    let plan = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert!(matches!(actions(&plan)[..], [Action::TunePkiMount { .. }]));
}

#[test]
fn wrong_mount_type_blocks() {
    let mut obs = observed(vec![], vec![]);
    obs.openbao.pki_mount = MountFacts::Present {
        kind: "kv".into(),
        max_lease_ttl: 0,
    };
    let plan = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert_eq!(plan.blockers.len(), 1);
    assert!(plan.blockers[0].fix.contains("pkiMount"));
}

#[test]
fn renewal_inside_renew_before_reissues_from_the_same_root() {
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 10)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let plan = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert_eq!(
        actions(&plan),
        vec![&Action::IssueIntermediate {
            cluster: "cluster-a".into(),
            signing: 1,
            trust: vec![1],
            keep: vec![],
            adopt: false
        }]
    );
    assert!(
        plan.changes[0].reason.contains("within renewBefore"),
        "{}",
        plan.changes[0].reason
    );
}

#[test]
fn expired_intermediate_is_reissued() {
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], -2)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let plan = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert!(plan.changes[0].reason.contains("expired"));
}

#[test]
fn a_root_ending_within_renew_before_stops_renewals_and_warns_with_the_date() {
    // Root with 30 days left, renewBefore 60 days: an intermediate cut to the root's end (Vault) or outliving
    // it (OpenBao) is not renewed again, and the plan says to rotate the root, with the date.
    let mut ending = root(1);
    ending.cert.not_after = NOW + 30 * DAY;
    let obs = observed(
        vec![ending],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 30)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 330)),
        ],
    );
    let mesh = mesh("ca:\n  intermediate:\n    renewBefore: 1440h\n");
    let plan = plan_for(&mesh, &obs, PlanOptions::default());
    assert!(plan.changes.is_empty(), "{plan}");
    let date = crate::duration::rfc3339(NOW + 30 * DAY);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains(&date) && w.contains("meshtrust ca rotate-root")),
        "{:?}",
        plan.warnings
    );
    // An intermediate that ends well before the root is still renewed, up to the root's end.
    let obs = observed(
        vec![obs.openbao.roots[0].clone()],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 10)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 30)),
        ],
    );
    let plan = plan_for(&mesh, &obs, PlanOptions::default());
    assert_eq!(plan.changes.len(), 1, "{plan}");
    assert!(plan.changes[0].resource.contains("cacerts"), "{plan}");
}

#[test]
fn unmanaged_cacerts_blocks_unless_adopted() {
    let unmanaged = with_cacerts(CacertsFacts::Unmanaged);
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", unmanaged),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let blocked = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert!(blocked.changes.is_empty());
    assert!(blocked.blockers[0].fix.contains("--adopt"));
    let adopted = plan_for(
        &mesh(""),
        &obs,
        PlanOptions {
            adopt: true,
            ..Default::default()
        },
    );
    assert!(matches!(
        adopted.changes[0].action,
        Action::IssueIntermediate { adopt: true, .. }
    ));
    // istiod booted with the adopted CA: a new root needs a restart, and the warning says why.
    assert_eq!(adopted.warnings.len(), 1, "{:?}", adopted.warnings);
    assert!(
        adopted.warnings[0]
            .starts_with("cluster cluster-a: --adopt replaces the CA istiod started with")
    );
}

#[test]
fn a_cacerts_another_controller_still_writes_blocks_even_with_adopt_and_names_it() {
    use crate::handover::{ClaimState, Controller, ForeignClaim};
    let mut eso = with_cacerts(CacertsFacts::Unmanaged);
    let claim = |state| ForeignClaim {
        controller: Controller::ExternalSecrets,
        object: Some("istio-cacerts".into()),
        owner_reference: true,
        state,
    };
    eso.claims.insert("cacerts".into(), claim(ClaimState::Live));
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", eso),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let adopt = PlanOptions {
        adopt: true,
        ..Default::default()
    };
    for options in [PlanOptions::default(), adopt] {
        let p = plan_for(&mesh(""), &obs, options);
        assert!(p.changes.is_empty(), "{p}");
        assert_eq!(p.blockers.len(), 1, "{p}");
        assert!(
            p.blockers[0]
                .reason
                .contains("ExternalSecret istio-system/istio-cacerts"),
            "{p}"
        );
        assert!(p.blockers[0].fix.contains("--cascade=orphan"), "{p}");
    }
    // Handed over: the ExternalSecret is gone and only its marks are left; --adopt takes it.
    let facts = obs.clusters.get_mut("cluster-a").expect("a");
    facts
        .claims
        .insert("cacerts".into(), claim(ClaimState::Gone));
    let p = plan_for(&mesh(""), &obs, adopt);
    assert!(
        matches!(
            p.changes[0].action,
            Action::IssueIntermediate { adopt: true, .. }
        ),
        "{p}"
    );
    assert!(p.notes[0].contains("left behind"), "{p}");
    // A managed cacerts another controller started writing again blocks its renewal, so nothing flaps.
    let mut renewing = intermediate("cluster-a", 1, &[1], -2);
    renewing
        .claims
        .insert("cacerts".into(), claim(ClaimState::Unknown));
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", renewing),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let p = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert!(p.changes.is_empty() && p.blockers.len() == 1, "{p}");
}

#[test]
fn a_new_cacerts_warns_once_that_a_running_istiod_needs_one_restart() {
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", with_cacerts(CacertsFacts::Absent)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let p = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let w = &p.warnings[0];
    assert!(w.contains("only if it existed when istiod started"), "{w}");
    assert!(w.contains("rollout restart deployment/istiod"), "{w}");
    assert!(w.contains("reloads by itself"), "{w}");
}

#[test]
fn broken_bundle_key_change_or_foreign_root_reissue() {
    let mut broken = intermediate("cluster-a", 1, &[1], 300);
    if let CacertsFacts::Managed(s) = &mut broken.cacerts {
        s.problems
            .push("ca-key.pem does not match ca-cert.pem".into());
    }
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", broken),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let p = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert!(p.changes[0].reason.contains("does not match"));

    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let p = plan_for(
        &mesh("ca:\n  intermediate:\n    keyType: rsa\n    keyBits: 2048\n"),
        &obs,
        PlanOptions::default(),
    );
    assert_eq!(p.changes.len(), 2);
    assert!(p.changes[0].reason.contains("RSA-2048"));

    let p = plan_for(
        &mesh("ca:\n  secretFormat: tls\n"),
        &obs,
        PlanOptions::default(),
    );
    assert_eq!(p.changes.len(), 2);

    // OpenBao was reset: cluster-a's root is unknown. It is kept, never cut: cluster-a first trusts the
    // mesh's root beside it (phase 1), and the warning says why.
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 7, &[7], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let p = plan_for(&mesh(""), &obs, PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![&Action::UpdateTrustBundle {
            cluster: "cluster-a".into(),
            trust: vec![1],
            keep: vec!["root-fp-7".into()],
        }],
        "{p}"
    );
    assert!(
        p.warnings.iter().any(|w| w.contains("does not hold")),
        "{p}"
    );
}

/// Walks a rotation from root 1 to root 2, applying each plan to the facts as apply would, and checks after
/// every phase that every cluster still trusts every other cluster's issuer.
#[test]
fn root_rotation_runs_three_phases_without_a_trust_gap() {
    // The intermediates signed with root 2 a day ago: a 1h dwell is over.
    let mesh = mesh("ca:\n  rootRotation:\n    phaseDwell: 1h\n");
    let mut obs = observed(
        vec![root(1), root(2)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let mut phases = Vec::new();
    for _ in 0..5 {
        let p = plan_for(&mesh, &obs, PlanOptions::default());
        if p.is_empty() {
            break;
        }
        phases.push(
            p.changes
                .iter()
                .map(|c| c.reason.clone())
                .collect::<Vec<_>>(),
        );
        for change in &p.changes {
            let (cluster, signing, trust) = match &change.action {
                Action::IssueIntermediate {
                    cluster,
                    signing,
                    trust,
                    ..
                } => (cluster, Some(*signing), trust),
                Action::UpdateTrustBundle { cluster, trust, .. } => (cluster, None, trust),
                other => panic!("unexpected {other:?}"),
            };
            let facts = obs.clusters.get_mut(cluster).expect("cluster");
            let CacertsFacts::Managed(state) = &mut facts.cacerts else {
                panic!()
            };
            state.trusted_roots = trust.iter().map(|g| format!("root-fp-{g}")).collect();
            if let Some(g) = signing {
                state.issuer_fingerprint = Some(format!("root-fp-{g}"));
            }
        }
        // No trust gap: every cluster trusts the root that signed every other cluster's intermediate.
        for a in obs.clusters.values() {
            for b in obs.clusters.values() {
                let (CacertsFacts::Managed(sa), CacertsFacts::Managed(sb)) =
                    (&a.cacerts, &b.cacerts)
                else {
                    panic!()
                };
                let issuer = sb.issuer_fingerprint.clone().expect("issuer");
                assert!(
                    sa.trusted_roots.contains(&issuer),
                    "trust gap after phase {}",
                    phases.len()
                );
            }
        }
    }
    assert_eq!(phases.len(), 3, "{phases:?}");
    assert!(phases[0].iter().all(|r| r.contains("phase 1")));
    assert!(phases[1].iter().all(|r| r.contains("phase 2")));
    assert!(phases[2].iter().all(|r| r.contains("phase 3")));
    let CacertsFacts::Managed(done) = &obs.clusters["cluster-a"].cacerts else {
        panic!()
    };
    assert_eq!(done.trusted_roots, vec!["root-fp-2".to_string()]);
}

/// A dwell shorter than the kubelet's delay in bringing a changed cacerts into an istiod pod is said while a
/// rotation runs; the default (24h) and anything from 5m up are not.
#[test]
fn a_rotation_with_a_dwell_shorter_than_the_kubelets_delay_is_warned_about() {
    let obs = observed(
        vec![root(1), root(2)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    let warned = |dwell: &str| {
        let text = if dwell.is_empty() {
            String::new()
        } else {
            format!("ca:\n  rootRotation:\n    phaseDwell: {dwell}\n")
        };
        plan_for(&mesh(&text), &obs, PlanOptions::default())
            .warnings
            .iter()
            .any(|w| w.contains("sees a changed cacerts only when the kubelet"))
    };
    assert!(warned("30s"));
    assert!(warned("4m"));
    assert!(!warned("5m"));
    assert!(!warned(""));
}

#[test]
fn new_cluster_during_rotation_is_signed_by_a_root_everyone_trusts() {
    let mut obs = observed(
        vec![root(1), root(2)],
        vec![("cluster-a", intermediate("cluster-a", 1, &[1], 300))],
    );
    obs.clusters
        .insert("cluster-b".into(), with_cacerts(CacertsFacts::Absent));
    let p = plan_for(&mesh(""), &obs, PlanOptions::default());
    let issue = p
        .changes
        .iter()
        .find(|c| matches!(c.action, Action::IssueIntermediate { .. }))
        .expect("issue");
    assert_eq!(
        issue.action,
        Action::IssueIntermediate {
            cluster: "cluster-b".into(),
            signing: 1,
            trust: vec![1, 2],
            keep: vec![],
            adopt: false
        }
    );
}

#[test]
fn shared_root_mode_warns_and_copies_the_root() {
    let mesh = mesh("ca:\n  mode: shared-root\n");
    let obs = observed(
        vec![],
        vec![
            ("cluster-a", empty_cluster()),
            ("cluster-b", empty_cluster()),
        ],
    );
    let p = plan_for(&mesh, &obs, PlanOptions::default());
    assert!(p.warnings[0].contains("ROOT KEY"));
    assert!(matches!(
        p.changes[0].action,
        Action::CreateSharedRoot { .. }
    ));
    assert_eq!(
        p.changes
            .iter()
            .filter(|c| matches!(c.action, Action::WriteSharedRoot { .. }))
            .count(),
        2
    );
}

#[test]
fn empty_openbao_config_is_created_in_order_and_settled_config_plans_nothing() {
    let mesh = mesh("openbao:\n  namespace: production\n");
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    obs.openbao.config = BaoConfigFacts {
        namespace_exists: Some(false),
        kv_mount: Some(MountFacts::Absent),
        ..Default::default()
    };
    settle_remote_secrets(&mut obs);
    let p = plan(&mesh, &obs, PlanOptions::default());
    let a = actions(&p);
    assert_eq!(
        a[0],
        &Action::CreateBaoNamespace {
            namespace: "production".into()
        }
    );
    assert_eq!(
        a[1],
        &Action::EnableKvMount {
            mount: "secret".into()
        }
    );
    // The admin policy before the mounts it grants, so that a token holding only it can make them.
    assert_eq!(
        a[2],
        &Action::WritePolicy {
            name: ADMIN_POLICY.into()
        }
    );
    assert!(matches!(a[3], Action::EnableAuthMount { .. }));
    assert!(matches!(a[4], Action::ConfigureAuth { .. }));
    assert!(matches!(a[5], Action::WriteAgentRole { .. }));
    // 1 ns + 1 kv + 2 x (mount, config, role) + 3 policies
    assert_eq!(p.changes.len(), 11, "{p}");
    assert!(plan_for(&mesh, &obs, PlanOptions::default()).is_empty());
}

#[test]
fn another_tools_auth_mount_gets_meshtrusts_role_and_keeps_its_own_config() {
    let mesh = mesh("");
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    obs.openbao.config = settled(&mesh, &obs);
    settle_remote_secrets(&mut obs);
    // seed 000: cluster-a's mount made by hand without a description, VSO's role in it, TokenReview elsewhere
    // and no meshtrust role yet; cluster-b's described by a person and never configured.
    let auth = &mut obs.openbao.config.auth;
    let a = auth.get_mut("cluster-a").expect("a");
    a.description = String::new();
    a.kubernetes_host = Some("https://seed-lb:6443".into());
    a.role = None;
    a.other_roles = Some(vec!["vault-secrets-operator".into()]);
    let b = auth.get_mut("cluster-b").expect("b");
    b.description = "team k8s login".into();
    b.kubernetes_host = None;
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![&Action::WriteAgentRole {
            cluster: "cluster-a".into(),
            mount: "kubernetes_cluster_a".into(),
        }],
        "only meshtrust's role is added; no config is rewritten, no mount described: {p}"
    );
    assert_eq!(p.notes.len(), 2, "{p}");
    assert!(p.notes[0].contains("vault-secrets-operator"), "{p}");
    assert!(p.notes[0].contains("removes only meshtrust-agent"), "{p}");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("auth/kubernetes_cluster_b") && w.contains("no config")),
        "{p}"
    );
}

#[test]
fn a_departed_cluster_loses_only_what_meshtrust_made() {
    use crate::auth_ownership::DepartedAuth;
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    let departed = |made: bool, others: &[&str]| DepartedAuth {
        cluster: "cluster-c".into(),
        made_by_meshtrust: made,
        agent_role: true,
        other_roles: Some(others.iter().map(|s| s.to_string()).collect()),
    };
    let config = &mut obs.openbao.config;
    config.departed_auth.insert(
        "kubernetes_cluster_c".into(),
        departed(false, &["vault-secrets-operator"]),
    );
    config
        .departed_auth
        .insert("kubernetes_cluster_d".into(), departed(true, &[]));
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![
            &Action::DeleteAgentRole {
                cluster: "cluster-c".into(),
                mount: "kubernetes_cluster_c".into(),
            },
            &Action::DisableAuthMount {
                cluster: "cluster-c".into(),
                mount: "kubernetes_cluster_d".into(),
            },
        ],
        "{p}"
    );
    assert!(p.changes.iter().all(|c| c.action.needs_openbao_admin()));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("auth/kubernetes_cluster_c") && n.contains("stays")),
        "{p}"
    );
}

#[test]
fn hand_edits_show_up_as_drift() {
    let mesh = mesh("");
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    obs.openbao.config = settled(&mesh, &obs);
    settle_remote_secrets(&mut obs);
    obs.openbao.config.policies.insert(
        agent_policy_name("cluster-a"),
        Some("path \"*\" { capabilities = [\"sudo\"] }".into()),
    );
    let auth = obs.openbao.config.auth.get_mut("cluster-b").expect("auth");
    auth.kubernetes_host = Some("https://elsewhere:6443".into());
    if let Some(role) = auth.role.as_mut() {
        role.policies.push("root".into());
    }
    let p = plan(&mesh, &obs, PlanOptions::default());
    let reasons: Vec<&str> = p.changes.iter().map(|c| c.reason.as_str()).collect();
    assert_eq!(p.changes.len(), 3, "{p}");
    assert!(reasons.iter().all(|r| r.contains("drift")), "{reasons:?}");
    assert!(
        p.changes
            .iter()
            .any(|c| c.resource == format!("auth/kubernetes_cluster_b/role/{AGENT_ROLE}"))
    );
}

#[test]
fn agent_policy_pins_the_cluster_and_grants_nothing_else() {
    let mesh = mesh("");
    let a = &mesh.clusters[0];
    let text = agent_policy(&mesh, a, &[1]);
    assert!(text.contains("\"common_name\" = [\"cluster-a intermediate CA (mesh1)\"]"));
    assert!(!text.contains("cluster-b"));
    assert!(text.contains("path \"secret/data/istio/remote-secrets/cluster-a\""));
    assert!(!text.contains("sys/policies"));
    assert!(
        !text.contains("secret/data/istio/ca"),
        "bao-pki agents cannot read a CA bundle"
    );
    let shared = mesh_with_shared_root();
    let text = agent_policy(&shared, &shared.clusters[0], &[]);
    assert!(text.contains("path \"secret/data/istio/ca\" {\n  capabilities = [\"read\"]"));
    assert!(!text.contains("sign-intermediate"));
}

fn mesh_with_shared_root() -> Mesh {
    mesh("ca:\n  mode: shared-root\n")
}

fn settled_observation(mesh: &Mesh) -> Observed {
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    obs.openbao.config = settled(mesh, &obs);
    settle_remote_secrets(&mut obs);
    obs
}

#[test]
fn unpublished_cluster_is_published_and_synced_to_its_peers() {
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    assert!(plan(&mesh, &obs, PlanOptions::default()).is_empty());
    obs.openbao.published.remove("cluster-a");
    obs.clusters
        .get_mut("cluster-b")
        .expect("b")
        .remote_secrets
        .clear();
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![
            &Action::PublishRemoteSecret {
                cluster: "cluster-a".into()
            },
            &Action::SyncRemoteSecret {
                cluster: "cluster-b".into(),
                peer: "cluster-a".into()
            },
        ]
    );
    assert!(p.changes[1].reason.contains("new peer"));
}

#[test]
fn expiring_token_or_moved_server_republishes() {
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    obs.openbao
        .published
        .get_mut("cluster-b")
        .expect("b")
        .token_expires = NOW + 3600;
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert!(p.changes[0].reason.contains("expires in 1h"), "{p}");
    assert_eq!(p.changes.len(), 2, "publish b, then sync it into a");

    let mut obs = settled_observation(&mesh);
    obs.clusters
        .get_mut("cluster-a")
        .expect("a")
        .desired_config_hash = "new".into();
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert!(p.changes[0].reason.contains("API address or CA"), "{p}");
}

#[test]
fn a_peer_version_that_moved_is_synced() {
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    obs.openbao
        .published
        .get_mut("cluster-b")
        .expect("b")
        .version = 7;
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![&Action::SyncRemoteSecret {
            cluster: "cluster-a".into(),
            peer: "cluster-b".into()
        }]
    );
    assert!(p.changes[0].reason.contains("published version 7"));
}

#[test]
fn removed_peers_are_deleted_and_unpublished_and_unmanaged_secrets_block() {
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    // cluster-c left the mesh file; the admin found its published entry by listing.
    obs.openbao.departed.insert("cluster-c".into());
    for c in obs.clusters.values_mut() {
        c.remote_secrets.insert(
            "cluster-c".into(),
            crate::facts::RemoteSecretFacts {
                managed: true,
                kv_version: Some(1),
            },
        );
        c.remote_secrets.insert(
            "stranger".into(),
            crate::facts::RemoteSecretFacts {
                managed: false,
                kv_version: None,
            },
        );
    }
    let p = plan(&mesh, &obs, PlanOptions::default());
    let deletes: Vec<_> = p
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::DeleteRemoteSecret { .. }))
        .collect();
    assert_eq!(
        deletes.len(),
        2,
        "cluster-c's secret in a and b, the unmanaged one untouched: {p}"
    );
    assert!(p.changes.iter().any(|c| c.action
        == Action::UnpublishRemoteSecret {
            cluster: "cluster-c".into()
        }));

    let mut obs = settled_observation(&mesh);
    obs.clusters
        .get_mut("cluster-a")
        .expect("a")
        .remote_secrets
        .insert(
            "cluster-b".into(),
            crate::facts::RemoteSecretFacts {
                managed: false,
                kv_version: None,
            },
        );
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert_eq!(p.blockers.len(), 1);
    assert!(p.blockers[0].reason.contains("not managed by meshtrust"));
}

#[test]
fn missing_reader_identity_is_created_but_istios_own_is_left_alone() {
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    obs.clusters.get_mut("cluster-a").expect("a").reader = ReaderFacts {
        service_account: ObjectState::Unmanaged,
        cluster_role: ObjectState::Unmanaged,
        binding: ObjectState::Unmanaged,
    };
    assert!(plan(&mesh, &obs, PlanOptions::default()).is_empty());
    obs.clusters.get_mut("cluster-b").expect("b").reader = ReaderFacts::default();
    let p = plan(&mesh, &obs, PlanOptions::default());
    // A recreated ServiceAccount voids the published token, so the kubeconfig is republished and synced.
    assert_eq!(
        actions(&p),
        vec![
            &Action::EnsureReader {
                cluster: "cluster-b".into()
            },
            &Action::PublishRemoteSecret {
                cluster: "cluster-b".into()
            },
            &Action::SyncRemoteSecret {
                cluster: "cluster-a".into(),
                peer: "cluster-b".into()
            },
        ]
    );
    assert!(p.changes[1].reason.contains("void"));
}

/// Applies a plan's trust changes to the facts the way the engine does: `root-cert.pem` keeps the file's
/// roots that stay (kept foreign ones included), then gains the new ones; a new intermediate is issued `now`.
fn apply_trust(obs: &mut Observed, plan: &Plan) {
    let now = obs.now;
    for change in &plan.changes {
        let (cluster, signing, trust, keep) = match &change.action {
            Action::IssueIntermediate {
                cluster,
                signing,
                trust,
                keep,
                ..
            } => (cluster, Some(*signing), trust, keep),
            Action::UpdateTrustBundle {
                cluster,
                trust,
                keep,
            } => (cluster, None, trust, keep),
            other => panic!("unexpected {other:?}"),
        };
        let facts = obs.clusters.get_mut(cluster).expect("cluster");
        let CacertsFacts::Managed(state) = &mut facts.cacerts else {
            panic!()
        };
        let wanted: Vec<String> = trust.iter().map(|g| format!("root-fp-{g}")).collect();
        let mut roots: Vec<String> = state
            .trusted_roots
            .iter()
            .filter(|fp| wanted.contains(fp) || keep.contains(fp))
            .cloned()
            .collect();
        for fp in wanted {
            if !roots.contains(&fp) {
                roots.push(fp);
            }
        }
        state.trusted_not_before = roots.iter().map(|_| NOW - DAY).collect();
        state.trusted_roots = roots;
        if let Some(g) = signing {
            state.issuer_fingerprint = Some(format!("root-fp-{g}"));
            if let Some(cert) = &mut state.ca_cert {
                cert.not_before = now;
            }
        }
    }
}

/// Every cluster trusts the root that signed every cluster's intermediate.
fn assert_no_trust_gap(obs: &Observed, when: &str) {
    for (a, fa) in &obs.clusters {
        for (b, fb) in &obs.clusters {
            let (CacertsFacts::Managed(sa), CacertsFacts::Managed(sb)) = (&fa.cacerts, &fb.cacerts)
            else {
                panic!()
            };
            let issuer = sb.issuer_fingerprint.clone().expect("issuer");
            assert!(
                sa.trusted_roots.contains(&issuer),
                "{when}: {a} does not trust {b}'s issuer {issuer}"
            );
        }
    }
}

/// Runs plans until one is empty, applying each; returns every round's reasons.
fn walk(mesh: &Mesh, obs: &mut Observed) -> Vec<Vec<String>> {
    let mut rounds = Vec::new();
    for _ in 0..6 {
        let p = plan_for(mesh, obs, PlanOptions::default());
        if p.is_empty() {
            break;
        }
        rounds.push(p.changes.iter().map(|c| c.reason.clone()).collect());
        apply_trust(obs, &p);
        assert_no_trust_gap(obs, &format!("after round {}", rounds.len()));
    }
    rounds
}

/// OpenBao restored from a snapshot taken before a rotation to root 2: it holds root 1 only, while every
/// cluster trusts and signs with root 2. Root 2 stays until every cluster has signed with root 1 for the
/// dwell; at no step does a cluster stop trusting another's issuer.
#[test]
fn a_restored_store_moves_the_mesh_back_through_the_phases_without_a_gap() {
    let mesh = mesh("ca:\n  rootRotation:\n    phaseDwell: 1h\n");
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 2, &[2], 300)),
            ("cluster-b", intermediate("cluster-b", 2, &[2], 300)),
        ],
    );
    let rounds = walk(&mesh, &mut obs);
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert!(
        rounds[0].iter().all(|r| r.contains("phase 1")),
        "{rounds:?}"
    );
    assert!(
        rounds[1].iter().all(|r| r.contains("does not hold")),
        "{rounds:?}"
    );
    // The dwell holds root 2 in every bundle.
    let p = plan_for(&mesh, &obs, PlanOptions::default());
    assert!(p.is_empty(), "{p}");
    assert!(
        p.warnings.iter().any(|w| w.contains("leave only after")),
        "{p}"
    );
    // OpenBao dates notBefore back 30 s: the dwell ends 30 s after notBefore + 1h.
    obs.now += 3600 + 60;
    let rounds = walk(&mesh, &mut obs);
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    assert!(
        rounds[0].iter().all(|r| r.contains("phase 3")),
        "{rounds:?}"
    );
    for facts in obs.clusters.values() {
        let CacertsFacts::Managed(s) = &facts.cacerts else {
            panic!()
        };
        assert_eq!(s.trusted_roots, ["root-fp-1"]);
    }
    assert!(plan_for(&mesh, &obs, PlanOptions::default()).is_empty());
}

/// The store lost for good: a fresh OpenBao generates root 1 (a new key), and the clusters' old root (same
/// issuer name, another key) is kept until every cluster has signed with the new one for the dwell.
#[test]
fn a_lost_store_moves_the_mesh_to_a_new_root_without_a_gap() {
    let mesh = mesh("");
    let mut obs = observed(
        vec![],
        vec![
            ("cluster-a", intermediate("cluster-a", 9, &[9], 300)),
            ("cluster-b", intermediate("cluster-b", 9, &[9], 300)),
        ],
    );
    let p = plan_for(&mesh, &obs, PlanOptions::default());
    assert!(
        matches!(
            p.changes[0].action,
            Action::GenerateRoot { generation: 1, .. }
        ),
        "{p}"
    );
    assert!(
        p.changes[1..]
            .iter()
            .all(|c| matches!(&c.action, Action::UpdateTrustBundle { keep, .. } if keep == &["root-fp-9"])),
        "{p}"
    );
    obs.openbao.roots.push(root(1));
    let rounds = walk(&mesh, &mut obs);
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    obs.now += DAY + 60;
    assert_eq!(walk(&mesh, &mut obs).len(), 1);
    assert!(plan_for(&mesh, &obs, PlanOptions::default()).is_empty());
}

/// A cluster's published trust facts handed back from an older snapshot (they name root 1 only, written
/// before root 2 was made) do not count: the rotation waits for its agent instead of moving intermediates
/// to a root that cluster may not trust.
#[test]
fn trust_facts_from_before_a_foreign_root_are_not_believed() {
    use crate::trust_facts::{Mark, PublishedTrust, TrustFacts};
    let mesh = mesh("");
    let mut a = intermediate("cluster-a", 2, &[2, 1], 300);
    if let CacertsFacts::Managed(s) = &mut a.cacerts {
        s.trusted_not_before = vec![NOW - 100, NOW - DAY];
    }
    let mut obs = observed(vec![root(1)], vec![("cluster-a", a)]);
    let old = TrustFacts {
        trusted_roots: vec!["root-fp-1".into()],
        signing_root: Some("root-fp-1".into()),
        served_roots: None,
        trusts_since: None,
        signs_since: Some(Mark {
            root: "root-fp-1".into(),
            at: NOW - 10 * DAY,
        }),
        settled_since: None,
        published_at: Some(NOW - 5 * DAY),
        ..TrustFacts::default()
    };
    obs.trust.read = true;
    obs.trust.published.insert(
        "cluster-b".into(),
        PublishedTrust {
            version: 3,
            facts: Some(old.clone()),
        },
    );
    let rotation = crate::rotation_plan::mesh_rotation(&mesh, &obs, 1, PlanOptions::default());
    assert!(!rotation.all_trust_newest, "{rotation:?}");
    assert!(
        rotation.waiting.iter().any(|w| w.contains("predate")),
        "{rotation:?}"
    );
    let p = plan_for(&mesh, &obs, PlanOptions::default());
    assert!(
        !p.changes
            .iter()
            .any(|c| matches!(c.action, Action::IssueIntermediate { .. })),
        "{p}"
    );
    // Written again after root 2 was made, it counts.
    let fresh = TrustFacts {
        published_at: Some(NOW - 50),
        ..old
    };
    obs.trust.published.get_mut("cluster-b").expect("b").facts = Some(fresh);
    let rotation = crate::rotation_plan::mesh_rotation(&mesh, &obs, 1, PlanOptions::default());
    assert!(rotation.all_trust_newest, "{rotation:?}");
}

#[test]
fn istioctls_long_lived_token_goes_only_once_every_peer_uses_a_bound_token() {
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    obs.clusters
        .get_mut("cluster-a")
        .expect("a")
        .legacy_reader_token = true;
    // cluster-b still holds istioctl's remote secret for cluster-a: the token stays, and plan says why.
    let b = obs.clusters.get_mut("cluster-b").expect("b");
    b.remote_secrets
        .get_mut("cluster-a")
        .expect("a's secret")
        .managed = false;
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert!(
        !actions(&p)
            .iter()
            .any(|a| matches!(a, Action::DeleteLegacyReaderToken { .. })),
        "{p}"
    );
    assert!(
        p.notes.iter().any(|n| n.contains("waiting for cluster-b")),
        "{p}"
    );
    // Adopted and synced from what cluster-a published: the token goes.
    let b = obs.clusters.get_mut("cluster-b").expect("b");
    b.remote_secrets
        .get_mut("cluster-a")
        .expect("a's secret")
        .managed = true;
    let p = plan(&mesh, &obs, PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![&Action::DeleteLegacyReaderToken {
            cluster: "cluster-a".into()
        }],
        "{p}"
    );
    assert!(
        p.changes[0]
            .resource
            .contains("istio-reader-service-account-istio-remote-secret-token")
    );
}

#[test]
fn only_one_domain_moves_while_the_other_waits_for_its_hand_over() {
    use crate::handover::{ClaimState, Controller, ForeignClaim};
    use crate::plan::Domain;
    let mesh = mesh("");
    let mut obs = settled_observation(&mesh);
    let a = obs.clusters.get_mut("cluster-a").expect("a");
    a.cacerts = CacertsFacts::Unmanaged;
    a.claims.insert(
        "cacerts".into(),
        ForeignClaim {
            controller: Controller::CertManager,
            object: Some("istiod-ca".into()),
            owner_reference: false,
            state: ClaimState::Live,
        },
    );
    a.remote_secrets
        .get_mut("cluster-b")
        .expect("b's secret")
        .managed = false;
    let options = |only| PlanOptions {
        adopt: true,
        only,
        ..Default::default()
    };
    let all = plan(&mesh, &obs, options(None));
    assert_eq!(all.blockers.len(), 1, "{all}");
    let remote = plan(&mesh, &obs, options(Some(Domain::RemoteSecrets)));
    assert!(remote.blockers.is_empty(), "{remote}");
    assert!(
        matches!(actions(&remote)[..], [Action::SyncRemoteSecret { .. }]),
        "{remote}"
    );
    let ca = plan(&mesh, &obs, options(Some(Domain::Trust)));
    assert!(ca.changes.is_empty() && ca.blockers.len() == 1, "{ca}");
    assert!(
        ca.blockers[0]
            .reason
            .contains("Certificate istio-system/istiod-ca"),
        "{ca}"
    );
}

#[test]
fn openbao_only_plans_exactly_the_admins_openbao_changes_and_nothing_inside_clusters() {
    let mesh = mesh("");
    let mut obs = observed(
        vec![],
        vec![
            ("cluster-a", empty_cluster()),
            ("cluster-b", empty_cluster()),
        ],
    );
    obs.openbao.pki_mount = MountFacts::Absent;
    obs.openbao.departed.insert("cluster-c".into());
    let full = plan(&mesh, &obs, PlanOptions::default());
    let only = plan(
        &mesh,
        &obs,
        PlanOptions {
            openbao_only: true,
            ..Default::default()
        },
    );
    let admin: Vec<&Change> = full
        .changes
        .iter()
        .filter(|c| c.action.needs_openbao_admin())
        .collect();
    assert_eq!(only.changes.iter().collect::<Vec<_>>(), admin);
    assert!(
        only.changes
            .iter()
            .any(|c| matches!(c.action, Action::GenerateRoot { .. }))
    );
    assert!(only.changes.iter().any(|c| c.action
        == Action::UnpublishRemoteSecret {
            cluster: "cluster-c".into()
        }));
    assert!(full.changes.len() > only.changes.len(), "{full}");
}

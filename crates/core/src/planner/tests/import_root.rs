//! `ca.importRoot`: the first root is imported (never generated instead), and the KV copy of an imported key
//! is offered for destruction only once a rotation to a root generated inside OpenBao has finished.

use super::*;
use crate::facts::ImportFacts;

const KV_IMPORT: &str = "ca:\n  importRoot:\n    kvPath: istio/ca\n";

/// The seed's root, as meshtrust's generation 1 would show it once imported.
fn seed_root_cert() -> CertFacts {
    root(1).cert
}

fn two(cluster: ClusterFacts) -> Vec<(&'static str, ClusterFacts)> {
    vec![("cluster-a", cluster.clone()), ("cluster-b", cluster)]
}

fn adopt() -> PlanOptions {
    PlanOptions {
        adopt: true,
        ..Default::default()
    }
}

fn destroy() -> PlanOptions {
    PlanOptions {
        destroy_imported_key: true,
        ..Default::default()
    }
}

#[test]
fn the_kv_bundle_is_imported_as_root_1_and_adopted_cacerts_are_signed_under_it() {
    let mut obs = observed(vec![], two(with_cacerts(CacertsFacts::Unmanaged)));
    obs.openbao.import = Some(ImportFacts::Ready {
        cert: seed_root_cert(),
    });
    let plan = plan_for(&mesh(KV_IMPORT), &obs, adopt());
    let a = actions(&plan);
    assert_eq!(
        a[0],
        &Action::ImportRoot {
            mount: "pki".into(),
            kv_path: "istio/ca".into()
        }
    );
    assert!(!a.iter().any(|a| matches!(a, Action::GenerateRoot { .. })));
    for cluster in ["cluster-a", "cluster-b"] {
        assert!(a.contains(&&Action::IssueIntermediate {
            cluster: cluster.into(),
            signing: 1,
            trust: vec![1],
            keep: vec![],
            adopt: true,
        }));
    }
    let text = plan.to_string();
    assert!(
        text.contains("imported from KV secret/istio/ca: the root every cluster trusts now (\"root\", sha256 root-fp-1)"),
        "{text}"
    );
    assert!(text.contains("no proxy sees a new root"), "{text}");
}

#[test]
fn a_missing_or_bad_bundle_blocks_and_no_new_root_is_made_instead() {
    let cases = [
        (ImportFacts::Missing, "does not exist"),
        (
            ImportFacts::Invalid {
                problems: vec!["KV secret/istio/ca key.pem is not the private key of the certificate in root-cert.pem; put the root's own key there".into()],
            },
            "is not the private key",
        ),
    ];
    for (facts, expected) in cases {
        let mut obs = observed(vec![], two(with_cacerts(CacertsFacts::Unmanaged)));
        obs.openbao.import = Some(facts);
        let plan = plan_for(&mesh(KV_IMPORT), &obs, adopt());
        assert_eq!(plan.blockers.len(), 1, "{plan}");
        let blocker = &plan.blockers[0];
        assert_eq!(blocker.resource, "KV secret/istio/ca");
        assert!(blocker.reason.contains(expected), "{}", blocker.reason);
        assert!(
            !plan
                .changes
                .iter()
                .any(|c| c.action.domain() == Domain::Trust),
            "nothing of the CA is planned: {plan}"
        );
    }
}

#[test]
fn the_imported_key_is_warned_about_until_a_rotation_finished_and_only_then_destroyed() {
    let mesh = mesh(KV_IMPORT);
    let seed = ImportFacts::Ready {
        cert: seed_root_cert(),
    };
    // Right after the import: the mesh still uses the imported root.
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", intermediate("cluster-a", 1, &[1], 300)),
            ("cluster-b", intermediate("cluster-b", 1, &[1], 300)),
        ],
    );
    obs.openbao.import = Some(seed.clone());
    let plan = plan_for(&mesh, &obs, destroy());
    assert!(plan.changes.is_empty(), "{plan}");
    let warnings = plan.warnings.join("\n");
    assert!(
        warnings.contains("has lived outside OpenBao")
            && warnings.contains("meshtrust ca rotate-root"),
        "{warnings}"
    );
    assert!(
        warnings.contains("--destroy-imported-key: not yet"),
        "{warnings}"
    );

    // Mid-rotation (phase 2 done, the dwell running): still not.
    obs.openbao.roots = vec![root(1), root(2)];
    obs.clusters.insert(
        "cluster-a".into(),
        intermediate("cluster-a", 2, &[1, 2], 300),
    );
    obs.clusters.insert(
        "cluster-b".into(),
        intermediate("cluster-b", 2, &[1, 2], 300),
    );
    let plan = plan_for(&mesh, &obs, destroy());
    assert!(
        !actions(&plan)
            .iter()
            .any(|a| matches!(a, Action::DestroyImportedKey { .. })),
        "{plan}"
    );
    assert!(
        plan.warnings
            .join("\n")
            .contains("the rotation to meshtrust-root-2 is under way")
    );

    // Every cluster trusts and signs with root 2 only: offered, and planned with the flag.
    obs.clusters
        .insert("cluster-a".into(), intermediate("cluster-a", 2, &[2], 300));
    obs.clusters
        .insert("cluster-b".into(), intermediate("cluster-b", 2, &[2], 300));
    let offered = plan_for(&mesh, &obs, PlanOptions::default());
    assert!(offered.changes.is_empty(), "{offered}");
    assert!(
        offered
            .warnings
            .join("\n")
            .contains("destroy it with `meshtrust apply --destroy-imported-key`"),
        "{offered}"
    );
    let plan = plan_for(&mesh, &obs, destroy());
    assert_eq!(
        actions(&plan),
        vec![&Action::DestroyImportedKey {
            kv_path: "istio/ca".into()
        }]
    );
    assert_eq!(plan.changes[0].op, Op::Delete);

    // Destroyed: nothing more to say.
    obs.openbao.import = Some(ImportFacts::Missing);
    let plan = plan_for(&mesh, &obs, destroy());
    assert!(plan.is_empty() && plan.warnings.is_empty(), "{plan}");
}

#[test]
fn an_imported_issuer_is_generation_1_signed_by_its_own_reference() {
    let mesh = mesh("ca:\n  importRoot:\n    issuer: seed-root\n");
    let mut obs = observed(vec![root(1)], two(with_cacerts(CacertsFacts::Unmanaged)));
    obs.openbao.import = Some(ImportFacts::Ready {
        cert: seed_root_cert(),
    });
    let plan = plan_for(&mesh, &obs, adopt());
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("the PKI issuer pki/seed-root")
                && n.contains("never renames, rewrites or deletes")),
        "{plan}"
    );
    assert!(
        !actions(&plan)
            .iter()
            .any(|a| matches!(a, Action::GenerateRoot { .. } | Action::ImportRoot { .. }))
    );
    assert_eq!(mesh.ca.issuer_ref(1), "seed-root");
    assert_eq!(mesh.ca.issuer_ref(2), "meshtrust-root-2");
    let cluster = &mesh.clusters[0];
    let agent = agent_policy(&mesh, cluster, &[1, 2]);
    assert!(
        agent.contains("path \"pki/issuer/seed-root/sign-intermediate\""),
        "{agent}"
    );
    assert!(agent.contains("path \"pki/issuer/meshtrust-root-2/sign-intermediate\""));
    // Missing: blocked, never a new root.
    let mut obs = observed(vec![], two(with_cacerts(CacertsFacts::Unmanaged)));
    obs.openbao.import = Some(ImportFacts::Missing);
    let plan = plan_for(&mesh, &obs, adopt());
    assert_eq!(
        plan.blockers[0].resource, "PKI issuer pki/seed-root",
        "{plan}"
    );
}

#[test]
fn import_root_settings_are_checked() {
    let bad = [
        (
            "ca:\n  importRoot:\n    kvPath: istio/ca\n    issuer: x\n",
            "sets both",
        ),
        ("ca:\n  importRoot: {}\n", "sets neither"),
        (
            "ca:\n  importRoot:\n    issuer: default\n",
            "follows whichever issuer",
        ),
        (
            "ca:\n  importRoot:\n    kvPath: /istio/ca\n",
            "is not a KV path",
        ),
        (
            "ca:\n  importRoot:\n    kvPath: data/istio/ca\n",
            "KV v2 API path",
        ),
        (
            "ca:\n  mode: shared-root\n  importRoot:\n    kvPath: istio/ca\n",
            "only with ca.mode bao-pki",
        ),
    ];
    for (extra, expected) in bad {
        let text = format!(
            "apiVersion: meshtrust.dev/v1\nkind: Mesh\n{extra}clusters:\n  - name: cluster-a\n    kubeconfig: a\n"
        );
        let err = Mesh::from_yaml(&text, "mesh.yaml", PathBuf::from("/"))
            .expect_err(extra)
            .to_string();
        assert!(
            err.contains("ca.importRoot") && err.contains(expected),
            "{extra}: {err}"
        );
    }
}

#[test]
fn adopting_a_cacerts_under_the_root_it_already_trusts_needs_no_istiod_restart() {
    let seed_cacerts = |roots: &[&str]| ClusterFacts {
        unmanaged_roots: roots.iter().map(|r| r.to_string()).collect(),
        ..with_cacerts(CacertsFacts::Unmanaged)
    };
    let mut obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", seed_cacerts(&["root-fp-1"])),
            ("cluster-b", seed_cacerts(&["some-other-root"])),
        ],
    );
    obs.openbao.import = Some(ImportFacts::Ready {
        cert: seed_root_cert(),
    });
    let plan = plan_for(&mesh(KV_IMPORT), &obs, adopt());
    let warnings = plan.warnings.join("\n");
    assert!(
        !warnings.contains("cluster cluster-a: --adopt replaces"),
        "{warnings}"
    );
    assert!(
        warnings.contains("cluster cluster-b: --adopt replaces"),
        "{warnings}"
    );
    let reason = |cluster: &str| {
        plan.changes
            .iter()
            .find(|c| {
                c.target
                    == Target::Cluster {
                        name: cluster.into(),
                    }
            })
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason("cluster-a").contains("its root stays"), "{plan}");
    assert!(!reason("cluster-b").contains("its root stays"), "{plan}");
}

#[test]
fn a_mesh_in_shared_root_mode_moves_to_intermediates_under_its_imported_root() {
    // shared-root mode's cacerts: the root itself (RSA-4096) as the cluster's CA, managed by meshtrust.
    let shared = |cluster: &str| {
        let mut facts = intermediate(cluster, 1, &[1], 3000);
        if let CacertsFacts::Managed(state) = &mut facts.cacerts {
            state.ca_cert = Some(root(1).cert);
        }
        facts
    };
    let obs = observed(
        vec![root(1)],
        vec![
            ("cluster-a", shared("cluster-a")),
            ("cluster-b", shared("cluster-b")),
        ],
    );
    let plan = plan_for(&mesh(KV_IMPORT), &obs, PlanOptions::default());
    for cluster in ["cluster-a", "cluster-b"] {
        assert!(
            actions(&plan).contains(&&Action::IssueIntermediate {
                cluster: cluster.into(),
                signing: 1,
                trust: vec![1],
                keep: vec![],
                adopt: false,
            }),
            "{plan}"
        );
    }
}

use super::*;
use crate::mesh::SecretFormat;

fn bundle(signed_by: &str, trust: &[&str]) -> CacertsState {
    CacertsState {
        format: SecretFormat::Istio,
        ca_cert: None,
        issuer_fingerprint: Some(signed_by.into()),
        trusted_roots: trust.iter().map(|s| s.to_string()).collect(),
        trusted_not_before: vec![],
        problems: vec![],
    }
}

#[test]
fn marks_keep_the_time_a_state_was_first_reached() {
    let served = vec!["r1".to_string(), "r2".to_string()];
    let first = desired_facts(
        Some(&bundle("r1", &["r1", "r2"])),
        Some(&served),
        None,
        "r2",
        100,
    );
    assert_eq!(
        first.trusts_since,
        Some(Mark {
            root: "r2".into(),
            at: 100
        })
    );
    assert_eq!(first.signs_since, None);
    let later = desired_facts(
        Some(&bundle("r2", &["r1", "r2"])),
        Some(&served),
        Some(&first),
        "r2",
        200,
    );
    assert_eq!(
        later.trusts_since, first.trusts_since,
        "kept, not moved to 200"
    );
    assert_eq!(
        later.signs_since,
        Some(Mark {
            root: "r2".into(),
            at: 200
        })
    );
    assert_eq!(later.settled_since, None);
    // Nothing changed: the same entry, so nothing is republished.
    let again = desired_facts(
        Some(&bundle("r2", &["r1", "r2"])),
        Some(&served),
        Some(&later),
        "r2",
        300,
    );
    assert!(again.same_as(&later), "{again:?}");
}

#[test]
fn trust_counts_only_once_istiod_serves_the_new_root() {
    let served_old = vec!["r1".to_string()];
    let facts = desired_facts(
        Some(&bundle("r1", &["r1", "r2"])),
        Some(&served_old),
        None,
        "r2",
        100,
    );
    assert_eq!(facts.trusts_since, None);
    // No ConfigMap: no istiod to wait for.
    let facts = desired_facts(Some(&bundle("r1", &["r1", "r2"])), None, None, "r2", 100);
    assert!(facts.trusts_since.is_some());
}

#[test]
fn a_mark_for_an_older_root_restarts_for_the_newest() {
    let previous = TrustFacts {
        signs_since: Some(Mark {
            root: "r1".into(),
            at: 5,
        }),
        ..Default::default()
    };
    let facts = desired_facts(
        Some(&bundle("r2", &["r2"])),
        None,
        Some(&previous),
        "r2",
        100,
    );
    assert_eq!(
        facts.signs_since,
        Some(Mark {
            root: "r2".into(),
            at: 100
        })
    );
    assert_eq!(
        facts.settled_since,
        Some(Mark {
            root: "r2".into(),
            at: 100
        })
    );
}

#[test]
fn entries_of_older_and_newer_releases_are_read_and_what_is_unknown_is_kept() {
    // Written before formats were versioned: no formatVersion, read as 0.
    let old: TrustFacts =
        serde_json::from_str(r#"{"trustedRoots":["r1"],"signingRoot":"r1","servedRoots":null,"trustsSince":null,"signsSince":null,"settledSince":null}"#)
            .expect("an older release's entry parses");
    assert_eq!(old.format_version, 0);
    assert_eq!(old.trusted_roots, ["r1"]);
    // Written by a newer release: its extra field is read past, and kept when this release rewrites the entry.
    let newer: TrustFacts = serde_json::from_str(
        r#"{"formatVersion":7,"trustedRoots":["r1","r2"],"signingRoot":"r1","drainedSince":{"root":"r1","at":3}}"#,
    )
    .expect("a newer release's entry parses");
    assert_eq!(newer.trusted_roots, ["r1", "r2"]);
    let rewritten = desired_facts(
        Some(&bundle("r2", &["r1", "r2"])),
        None,
        Some(&newer),
        "r2",
        100,
    );
    assert_eq!(rewritten.format_version, crate::names::FORMAT_VERSION);
    let text = serde_json::to_string(&rewritten).expect("encode");
    assert!(
        text.contains(r#""drainedSince":{"at":3,"root":"r1"}"#)
            || text.contains(r#""drainedSince":{"root":"r1","at":3}"#),
        "{text}"
    );
    assert!(text.contains(r#""formatVersion":1"#), "{text}");
}

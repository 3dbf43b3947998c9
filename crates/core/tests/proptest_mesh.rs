//! Property tests of the mesh-file parser and the YAML Istio reads: no input panics, and whatever is accepted
//! is safe to write into YAML. `PROPTEST_CASES` sets the cases per test (default 2,000; docs/testing.md has the
//! long run).

use std::path::PathBuf;

use meshtrust_core::duration::Span;
use meshtrust_core::istio::{reader_kubeconfig, yaml_scalar};
use meshtrust_core::mesh::{MAX_SPAN, Mesh};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const VALID: &str = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: mesh1\nopenbao:\n  address: https://bao.example:8200\n  kvMount: secret\nca:\n  mode: bao-pki\n  root:\n    ttl: 87600h\n    keyBits: 4096\n  intermediate:\n    ttl: 8760h\n    renewBefore: 720h\n    organization: Istio\nagent:\n  tokenTtl: 1h\nremoteSecrets:\n  tokenTtl: 24h\n  refreshBefore: 8h\nclusters:\n  - name: cluster-a\n    kubeconfig: kc-a\n    network: network1\n    apiServer: https://10.0.0.1:6443\n  - name: cluster-b\n    kubeconfig: kc-b\n";

fn parse(text: &str) -> Result<Mesh, String> {
    Mesh::from_yaml(text, "mesh.yaml", PathBuf::from("/m")).map_err(|e| e.to_string())
}

/// One edit of a text: delete, insert or replace a run of characters at a position.
fn mutate(text: &str, edits: &[(usize, u8, String)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, op, piece) in edits {
        let at = at % (chars.len() + 1);
        match op % 3 {
            0 => {
                let end = (at + piece.chars().count().max(1)).min(chars.len());
                chars.drain(at..end);
            }
            1 => {
                chars.splice(at..at, piece.chars());
            }
            _ => {
                let end = (at + piece.chars().count()).min(chars.len());
                chars.splice(at..end, piece.chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// Fragments that matter to YAML and to the validators.
fn yaml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ :\\-\\[\\]{}&*!|>'\"%@`#,?\n\t]{1,4}",
        Just("500000y".to_string()),
        Just("99999999999999999999h".to_string()),
        Just("\"123\"".to_string()),
        Just("true".to_string()),
        Just("&a [*a]".to_string()),
        Just("\n  - name: x\n".to_string()),
        Just("https://h:1\nx".to_string()),
    ]
}

/// Everything an accepted file hands to other writers must be YAML-plain and bounded.
fn check_accepted(mesh: &Mesh) {
    for c in &mesh.clusters {
        assert_eq!(yaml_scalar(&c.name), c.name.as_str(), "{:?}", c.name);
        assert_eq!(
            yaml_scalar(&c.network),
            c.network.as_str(),
            "{:?}",
            c.network
        );
        if let Some(api) = &c.api_server {
            assert!(!api.chars().any(char::is_whitespace), "{api:?}");
        }
    }
    for span in [
        mesh.ca.root.ttl,
        mesh.ca.intermediate.ttl,
        mesh.agent.token_ttl,
        mesh.remote_secrets.token_ttl,
    ] {
        assert!(span <= MAX_SPAN && span.seconds() > 0);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn mutated_valid_files_are_refused_or_safe(edits in prop::collection::vec((any::<usize>(), any::<u8>(), yaml_piece()), 1..4)) {
        if let Ok(mesh) = parse(&mutate(VALID, &edits)) {
            check_accepted(&mesh);
        }
    }

    #[test]
    fn any_duration_parses_or_is_refused(text in "[0-9smhdyx ]{0,30}") {
        let _ = Span::parse(&text);
    }

    #[test]
    fn reader_kubeconfig_reads_back_the_same_strings(
        cluster in any::<String>(), server in any::<String>(), token in "[A-Za-z0-9._-]{0,64}",
    ) {
        let text = reader_kubeconfig(&cluster, &server, "ca", &token);
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
        prop_assert_eq!(doc["current-context"].as_str(), Some(cluster.as_str()));
        prop_assert_eq!(doc["clusters"][0]["cluster"]["server"].as_str(), Some(server.as_str()));
        prop_assert_eq!(doc["users"][0]["user"]["token"].as_str(), Some(token.as_str()));
    }
}

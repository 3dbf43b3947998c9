//! Property tests of kubeconfig parsing: a peer's reader kubeconfig (untrusted shared data) and the
//! kubeconfigs meshtrust loads, arbitrary and mutated. No input panics; an accepted reader kubeconfig never
//! carries an exec plugin or a local path. `PROPTEST_CASES` sets the cases per test.

use kube::config::{KubeConfigOptions, Kubeconfig};
use meshtrust_kube::parse_reader_kubeconfig;
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

const VALID: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Y2E=\n    server: https://10.0.0.1:6443\n  name: cluster-a\ncontexts:\n- context:\n    cluster: cluster-a\n    user: cluster-a\n  name: cluster-a\ncurrent-context: cluster-a\nkind: Config\nusers:\n- name: cluster-a\n  user:\n    token: abc.def.ghi\n";

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ :\\-\\[\\]{}&*!|>'\"\n]{1,3}",
        Just("\n    exec:\n      command: /bin/sh\n".to_string()),
        Just("\n    tokenFile: /etc/shadow\n".to_string()),
        Just("\n    certificate-authority: /dev/zero\n".to_string()),
        Just("\n    auth-provider:\n      name: gcp\n".to_string()),
    ]
}

fn mutate(text: &str, at: usize, cut: usize, piece: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    let end = (at + cut).min(chars.len());
    chars[..at]
        .iter()
        .chain(piece.chars().collect::<Vec<_>>().iter())
        .chain(chars[end..].iter())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_reader_kubeconfig(&text);
        let _ = Kubeconfig::from_yaml(&text);
    }

    #[test]
    fn mutated_kubeconfigs_are_refused_or_harmless(at in any::<usize>(), cut in 0usize..12, piece in piece()) {
        let text = mutate(VALID, at, cut, &piece);
        if let Ok(kc) = parse_reader_kubeconfig(&text) {
            for user in kc.auth_infos.iter().filter_map(|u| u.auth_info.as_ref()) {
                prop_assert!(user.exec.is_none() && user.auth_provider.is_none() && user.token_file.is_none());
            }
            for cluster in kc.clusters.iter().filter_map(|c| c.cluster.as_ref()) {
                prop_assert!(cluster.certificate_authority.is_none());
            }
            // Building the client config from an accepted one must not panic either (no IO: no paths left).
            let _ = runtime().block_on(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()));
        }
    }
}

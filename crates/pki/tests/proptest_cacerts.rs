//! Property tests of cacerts inspection: arbitrary bytes and mutated valid bundles never panic, and a
//! bundle with a broken field is never reported clean. `PROPTEST_CASES` sets the cases per test.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use meshtrust_core::duration::Span;
use meshtrust_core::mesh::{KeySpec, KeyType, RootSettings};
use meshtrust_core::secret::SecretBytes;
use meshtrust_pki::cacerts::inspect;
use meshtrust_pki::parse_certs;
use meshtrust_pki::shared_root::SharedRoot;
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;
const FIELDS: [&str; 7] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
    "tls.crt",
    "tls.key",
    "ca.crt",
];

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

/// A valid bundle in Istio's layout: a self-signed CA as its own root (generated once, EC for speed).
fn valid() -> &'static BTreeMap<String, String> {
    static BUNDLE: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let settings = RootSettings {
            common_name: "prop root".into(),
            organization: "Istio".into(),
            key: KeySpec {
                key_type: KeyType::Ec,
                bits: 256,
            },
            ttl: Span::hours(24 * 365),
        };
        let root = SharedRoot::generate(&settings, NOW - 60).expect("root");
        BTreeMap::from([
            ("ca-cert.pem".to_string(), root.cert_pem.clone()),
            ("ca-key.pem".to_string(), root.key.expose_pem().to_string()),
            ("root-cert.pem".to_string(), root.cert_pem.clone()),
            ("cert-chain.pem".to_string(), root.cert_pem.clone()),
        ])
    })
}

fn to_secret(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, SecretBytes> {
    data.iter()
        .map(|(k, v)| (k.clone(), SecretBytes::new(v.clone())))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(fields in prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), prop::collection::vec(any::<u8>(), 0..512), 0..5)) {
        let data = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = inspect(&to_secret(&data), NOW);
    }

    #[test]
    fn mutated_bundles_never_panic(field in prop::sample::select(FIELDS[..4].to_vec()), at in any::<usize>(), len in 0usize..64, fill in any::<u8>()) {
        let mut data: BTreeMap<String, Vec<u8>> = valid().iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        let value = data.get_mut(field).expect("field");
        let at = at % (value.len() + 1);
        let end = (at + len).min(value.len());
        value.splice(at..end, std::iter::repeat_n(fill, len / 2));
        let _ = inspect(&to_secret(&data), NOW);
    }

    #[test]
    fn arbitrary_text_never_panics_the_pem_parser(text in any::<String>()) {
        let _ = parse_certs(&text, "ca-cert.pem");
        let wrapped = format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n");
        let _ = parse_certs(&wrapped, "ca-cert.pem");
    }
}

#[test]
fn the_valid_bundle_is_clean() {
    let data = valid()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let state = inspect(&to_secret(&data), NOW);
    assert!(state.problems.is_empty(), "{:?}", state.problems);
}

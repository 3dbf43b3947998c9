use meshtrust_core::mesh::{KeySpec, KeyType};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::*;
use crate::generate_key;

const NOW: i64 = 1_800_000_000;

struct Ca {
    pem: String,
    key: PrivateKeyPem,
}

fn ca(cn: &str, issuer: Option<&Ca>) -> Ca {
    let key = generate_key(KeySpec {
        key_type: KeyType::Ec,
        bits: 256,
    })
    .expect("key");
    let pair = KeyPair::from_pem(key.expose_pem()).expect("pair");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 3600).expect("t");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 86_400 * 30).expect("t");
    let cert = match issuer {
        None => params.self_signed(&pair).expect("self-signed"),
        Some(issuer) => {
            let ikey = KeyPair::from_pem(issuer.key.expose_pem()).expect("issuer key");
            let signer = Issuer::from_ca_cert_pem(&issuer.pem, ikey).expect("issuer");
            params.signed_by(&pair, &signer).expect("signed")
        }
    };
    Ca {
        pem: cert.pem(),
        key,
    }
}

fn bundle(int: &Ca, root: &Ca, trusted: &[&Ca]) -> CacertsBundle {
    CacertsBundle {
        ca_cert_pem: int.pem.clone(),
        ca_key: int.key.clone(),
        issuer_pem: root.pem.clone(),
        trusted_roots_pem: trusted.iter().map(|c| c.pem.clone()).collect(),
    }
}

#[test]
fn a_well_formed_bundle_has_no_problems_in_either_layout() {
    let root = ca("root", None);
    let int = ca("cluster-a intermediate CA (mesh1)", Some(&root));
    for format in [SecretFormat::Istio, SecretFormat::Tls] {
        let data = bundle(&int, &root, &[&root]).to_secret_data(format);
        let state = inspect(&data, NOW);
        assert_eq!(state.problems, Vec::<String>::new(), "{format:?}");
        assert_eq!(state.format, format);
        let root_fp = parse_certs(&root.pem, "root").expect("root")[0]
            .facts
            .fingerprint
            .clone();
        assert_eq!(state.issuer_fingerprint.as_deref(), Some(root_fp.as_str()));
        assert_eq!(state.trusted_roots, vec![root_fp]);
        assert_eq!(
            state.ca_cert.expect("ca").subject_cn,
            "cluster-a intermediate CA (mesh1)"
        );
    }
    let data = bundle(&int, &root, &[&root]).to_secret_data(SecretFormat::Istio);
    let chain = data["cert-chain.pem"].expose_str().expect("utf8");
    assert!(chain.starts_with(int.pem.trim_end()), "intermediate first");
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
}

#[test]
fn a_mismatched_key_is_found() {
    let root = ca("root", None);
    let int = ca("int", Some(&root));
    let other = ca("other", Some(&root));
    let mut b = bundle(&int, &root, &[&root]);
    b.ca_key = other.key.clone();
    let state = inspect(&b.to_secret_data(SecretFormat::Istio), NOW);
    assert!(
        state
            .problems
            .iter()
            .any(|p| p == "ca-key.pem does not match ca-cert.pem"),
        "{:?}",
        state.problems
    );
}

#[test]
fn a_foreign_root_or_missing_part_is_found() {
    let root = ca("root", None);
    let stranger = ca("stranger", None);
    let int = ca("int", Some(&root));
    let state = inspect(
        &bundle(&int, &root, &[&stranger]).to_secret_data(SecretFormat::Istio),
        NOW,
    );
    assert!(
        state
            .problems
            .iter()
            .any(|p| p.contains("does not end at a root")),
        "{:?}",
        state.problems
    );

    let mut data = bundle(&int, &root, &[&root]).to_secret_data(SecretFormat::Istio);
    data.remove("cert-chain.pem");
    let state = inspect(&data, NOW);
    assert!(
        state
            .problems
            .iter()
            .any(|p| p.contains("cert-chain.pem is missing"))
    );

    let mut data = bundle(&int, &root, &[&root]).to_secret_data(SecretFormat::Istio);
    data.insert("root-cert.pem".into(), SecretBytes::new("not pem\n"));
    let state = inspect(&data, NOW);
    assert!(
        state.problems.iter().any(|p| p.contains("root-cert.pem")),
        "{:?}",
        state.problems
    );
}

#[test]
fn a_chain_in_the_wrong_order_is_found() {
    let root = ca("root", None);
    let int = ca("int", Some(&root));
    let mut data = bundle(&int, &root, &[&root]).to_secret_data(SecretFormat::Istio);
    data.insert(
        "cert-chain.pem".into(),
        SecretBytes::new(format!("{}{}", root.pem, int.pem)),
    );
    let state = inspect(&data, NOW);
    assert!(
        state
            .problems
            .iter()
            .any(|p| p.contains("must start with ca-cert.pem"))
    );
}

#[test]
fn two_roots_during_rotation_are_both_listed() {
    let old = ca("old", None);
    let new = ca("new", None);
    let int = ca("int", Some(&old));
    let state = inspect(
        &bundle(&int, &old, &[&old, &new]).to_secret_data(SecretFormat::Istio),
        NOW,
    );
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    assert_eq!(state.trusted_roots.len(), 2);
}

#[test]
fn existing_signer_is_read_back() {
    let root = ca("root", None);
    let int = ca("int", Some(&root));
    let data = bundle(&int, &root, &[&root]).to_secret_data(SecretFormat::Tls);
    let (cert, key) = CacertsBundle::existing_signer(&data).expect("signer");
    assert_eq!(cert.trim(), int.pem.trim());
    assert_eq!(key.expose_pem(), int.key.expose_pem());
}

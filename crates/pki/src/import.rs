//! A root to import (`ca.importRoot.kvPath`): seed 001's KV bundle (`root-cert.pem`, `key.pem`), checked before
//! anything is written. Problems name the field and the fix, never the content.

use std::collections::BTreeMap;

use meshtrust_core::facts::{CertFacts, ImportFacts};
use meshtrust_core::secret::SecretBytes;

use crate::shared_root::{KEY_FIELD, ROOT_CERT_FIELD};
use crate::{ParsedCert, PrivateKeyPem, key_matches, parse_certs};

/// A root certificate and its private key, checked: a self-signed CA, unexpired, the key its own.
pub struct ImportBundle {
    pub cert: ParsedCert,
    pub key: PrivateKeyPem,
}

impl ImportBundle {
    /// Reads and checks the bundle at `source` (a KV path, for messages) as of `now`.
    pub fn from_kv(
        data: &BTreeMap<String, SecretBytes>,
        source: &str,
        now: i64,
    ) -> Result<ImportBundle, Vec<String>> {
        let field = |name: &str| data.get(name).and_then(SecretBytes::expose_str);
        let (Some(cert_pem), Some(key_pem)) = (field(ROOT_CERT_FIELD), field(KEY_FIELD)) else {
            let missing: Vec<&str> = [ROOT_CERT_FIELD, KEY_FIELD]
                .into_iter()
                .filter(|f| field(f).is_none())
                .collect();
            return Err(vec![format!(
                "{source} has no {} field (seed 001's bundle has root-cert.pem, cert-chain.pem and key.pem, as PEM text)",
                missing.join(" and no ")
            )]);
        };
        let what = format!("{source} {ROOT_CERT_FIELD}");
        let cert = parse_certs(cert_pem, &what)
            .map_err(|e| vec![e.to_string()])?
            .remove(0);
        let mut problems = cert_problems(&cert.facts, cert.self_signed, &what, now);
        let key = PrivateKeyPem::from_pem(key_pem);
        match key_matches(&key, &cert, &format!("{source} {KEY_FIELD}")) {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "{source} {KEY_FIELD} is not the private key of the certificate in {ROOT_CERT_FIELD}; put the root's own key there"
            )),
            Err(e) => problems.push(e.to_string()),
        }
        if problems.is_empty() {
            Ok(ImportBundle { cert, key })
        } else {
            Err(problems)
        }
    }

    /// The PEM bundle OpenBao imports: the certificate, then the key. Never log it.
    pub fn pem_bundle(&self) -> SecretBytes {
        SecretBytes::new(format!(
            "{}\n{}\n",
            self.cert.pem.trim_end(),
            self.key.expose_pem().trim_end()
        ))
    }
}

/// What `observe` reports of a KV bundle: ready with its certificate, or every problem.
pub fn import_facts(data: &BTreeMap<String, SecretBytes>, source: &str, now: i64) -> ImportFacts {
    match ImportBundle::from_kv(data, source, now) {
        Ok(bundle) => ImportFacts::Ready {
            cert: bundle.cert.facts,
        },
        Err(problems) => ImportFacts::Invalid { problems },
    }
}

/// Why a certificate cannot be the mesh's root: not a CA, not self-signed, outside its validity.
pub fn cert_problems(cert: &CertFacts, self_signed: bool, what: &str, now: i64) -> Vec<String> {
    let mut problems = Vec::new();
    if !cert.is_ca {
        problems.push(format!(
            "{what}: \"{}\" is not a CA certificate (no basicConstraints CA:TRUE); import the root that signs the clusters' CAs",
            cert.subject_cn
        ));
    }
    if !self_signed {
        problems.push(format!(
            "{what}: \"{}\" is not self-signed; import the root itself, not an intermediate",
            cert.subject_cn
        ));
    }
    if cert.not_after <= now {
        problems.push(format!(
            "{what}: \"{}\" has expired; a mesh cannot keep an expired root, so generate a new one instead (remove ca.importRoot)",
            cert.subject_cn
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_root::SharedRoot;
    use meshtrust_core::duration::Span;
    use meshtrust_core::mesh::{KeySpec, KeyType, RootSettings};

    fn root(cn: &str) -> SharedRoot {
        let settings = RootSettings {
            common_name: cn.into(),
            organization: "Istio".into(),
            key: KeySpec {
                key_type: KeyType::Ec,
                bits: 256,
            },
            ttl: Span(3600),
        };
        SharedRoot::generate(&settings, 1_000_000).expect("root")
    }

    #[test]
    fn a_good_bundle_is_ready_and_its_pem_bundle_holds_cert_and_key() {
        let r = root("Root CA");
        let bundle = ImportBundle::from_kv(&r.to_kv(), "KV secret/istio/ca", 1_000_000)
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(bundle.cert.facts.subject_cn, "Root CA");
        let pem = bundle.pem_bundle();
        let text = pem.expose_str().expect("utf-8");
        assert!(text.contains("BEGIN CERTIFICATE") && text.contains("PRIVATE KEY"));
        assert!(!format!("{pem:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_bundles_name_the_field_and_never_the_key() {
        let (a, b) = (root("A"), root("B"));
        let mut mismatched = a.to_kv();
        mismatched.insert(
            KEY_FIELD.into(),
            SecretBytes::new(b.key.expose_pem().to_string()),
        );
        let mut no_key = a.to_kv();
        no_key.remove(KEY_FIELD);
        let mut garbage = a.to_kv();
        garbage.insert(ROOT_CERT_FIELD.into(), SecretBytes::new("not pem"));
        let cases = [
            (mismatched, "is not the private key of the certificate"),
            (no_key, "has no key.pem field"),
            (garbage, "root-cert.pem: no PEM CERTIFICATE block"),
            (a.to_kv(), "has expired"),
        ];
        for (i, (data, expected)) in cases.into_iter().enumerate() {
            let now = if i == 3 { 2_000_000_000 } else { 1_000_000 };
            let Err(problems) = ImportBundle::from_kv(&data, "KV secret/istio/ca", now) else {
                panic!("case {i} accepted");
            };
            let text = problems.join("; ");
            assert!(text.contains(expected), "case {i}: {text}");
            assert!(text.contains("KV secret/istio/ca"), "case {i}: {text}");
            assert!(!text.contains("PRIVATE KEY"), "case {i}: {text}");
            assert!(!text.contains(a.key.expose_pem().lines().nth(1).unwrap_or("x")));
        }
    }

    #[test]
    fn a_non_ca_is_refused() {
        let r = root("Root CA");
        let bundle = ImportBundle::from_kv(&r.to_kv(), "KV x", 1_000_000).expect("ok");
        let mut facts = bundle.cert.facts.clone();
        facts.is_ca = false;
        let problems = cert_problems(&facts, true, "KV x root-cert.pem", 1_000_000);
        assert!(problems[0].contains("not a CA certificate"), "{problems:?}");
    }
}

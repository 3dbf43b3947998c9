//! Istio's plug-in CA Secret, `cacerts`: writing it in either layout istiod reads, and inspecting one the way
//! istiod would (all four parts present, CA:TRUE, key matches, chain verifies to a root in the bundle).

use std::collections::BTreeMap;

use meshtrust_core::facts::CacertsState;
use meshtrust_core::mesh::SecretFormat;
use meshtrust_core::secret::SecretBytes;

use crate::cert::{ParsedCert, parse_certs, signed_by};
use crate::key::{PrivateKeyPem, key_matches};

/// The key names of each layout: (signing cert, signing key, root bundle, chain or None).
fn layout(
    format: SecretFormat,
) -> (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
) {
    match format {
        SecretFormat::Istio => (
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            Some("cert-chain.pem"),
        ),
        // istiod builds the chain itself as tls.crt + ca.crt, and takes ca.crt as the root.
        SecretFormat::Tls => ("tls.crt", "tls.key", "ca.crt", None),
    }
}

/// istiod picks the layout only by whether `tls.crt` exists.
pub fn detect_format(data: &BTreeMap<String, SecretBytes>) -> SecretFormat {
    if data.contains_key("tls.crt") {
        SecretFormat::Tls
    } else {
        SecretFormat::Istio
    }
}

/// What goes into `cacerts`.
pub struct CacertsBundle {
    /// The signing CA (an intermediate, or the shared root itself).
    pub ca_cert_pem: String,
    pub ca_key: PrivateKeyPem,
    /// The certificate that signed `ca_cert_pem` (equal to it for a self-signed root).
    pub issuer_pem: String,
    /// Every root the cluster trusts, in rotation order.
    pub trusted_roots_pem: Vec<String>,
}

fn with_newline(pem: &str) -> String {
    // A concatenation without a trailing newline loses certificates, so every part ends with one.
    if pem.ends_with('\n') {
        pem.to_string()
    } else {
        format!("{pem}\n")
    }
}

impl CacertsBundle {
    pub fn to_secret_data(&self, format: SecretFormat) -> BTreeMap<String, SecretBytes> {
        let (cert_key, key_key, root_key, chain_key) = layout(format);
        let ca_cert = with_newline(&self.ca_cert_pem);
        let roots: String = self
            .trusted_roots_pem
            .iter()
            .map(|r| with_newline(r))
            .collect();
        let mut data = BTreeMap::new();
        data.insert(cert_key.to_string(), SecretBytes::new(ca_cert.clone()));
        data.insert(
            key_key.to_string(),
            SecretBytes::new(with_newline(self.ca_key.expose_pem())),
        );
        data.insert(root_key.to_string(), SecretBytes::new(roots));
        if let Some(chain_key) = chain_key {
            // Intermediate first, then its root: the first certificate bounds workload TTLs.
            let chain = if self.issuer_pem.trim() == self.ca_cert_pem.trim() {
                ca_cert
            } else {
                format!("{ca_cert}{}", with_newline(&self.issuer_pem))
            };
            data.insert(chain_key.to_string(), SecretBytes::new(chain));
        }
        data
    }

    /// The roots of an existing Secret's `root-cert.pem` (or `ca.crt`), in file order, with their fingerprints;
    /// empty when it is missing or does not parse.
    pub fn existing_roots(data: &BTreeMap<String, SecretBytes>) -> Vec<(String, String)> {
        let (_, _, root_key, _) = layout(detect_format(data));
        data.get(root_key)
            .and_then(|v| v.expose_str())
            .and_then(|t| parse_certs(t, root_key).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.facts.fingerprint, c.pem))
            .collect()
    }

    /// Reads back the signing cert and key of an existing Secret, to keep them while only the roots change.
    pub fn existing_signer(
        data: &BTreeMap<String, SecretBytes>,
    ) -> Option<(String, PrivateKeyPem)> {
        let (cert_key, key_key, _, _) = layout(detect_format(data));
        let cert = data.get(cert_key)?.expose_str()?;
        let first = parse_certs(cert, cert_key).ok()?.into_iter().next()?;
        let key = PrivateKeyPem::from_pem(data.get(key_key)?.expose_str()?);
        Some((first.pem, key))
    }
}

/// Inspects a `cacerts` Secret as istiod would load it. `now` is Unix seconds.
pub fn inspect(data: &BTreeMap<String, SecretBytes>, now: i64) -> CacertsState {
    let format = detect_format(data);
    let (cert_key, key_key, root_key, chain_key) = layout(format);
    let mut state = CacertsState {
        format,
        ca_cert: None,
        issuer_fingerprint: None,
        trusted_roots: vec![],
        trusted_not_before: vec![],
        problems: vec![],
    };
    let mut text = |name: &str| -> Option<String> {
        match data.get(name).map(|v| v.expose_str()) {
            None => {
                state.problems.push(format!(
                    "{name} is missing (istiod refuses an incomplete bundle)"
                ));
                None
            }
            Some(None) => {
                state.problems.push(format!("{name} is not UTF-8 PEM"));
                None
            }
            Some(Some(t)) => {
                if !t.ends_with('\n') {
                    state
                        .problems
                        .push(format!("{name} does not end with a newline"));
                }
                Some(t.to_string())
            }
        }
    };
    let cert_text = text(cert_key);
    let key_text = text(key_key);
    let root_text = text(root_key);
    let chain_text = chain_key.and_then(&mut text);
    if data.contains_key("istio-generated") {
        state
            .problems
            .push("has an istio-generated key, so istiod treats it as self-signed".into());
    }

    let mut parse = |t: Option<String>, name: &str| -> Vec<ParsedCert> {
        match t.map(|t| parse_certs(&t, name)) {
            Some(Ok(certs)) => certs,
            Some(Err(e)) => {
                state.problems.push(e.to_string());
                vec![]
            }
            None => vec![],
        }
    };
    let ca_certs = parse(cert_text, cert_key);
    let roots = parse(root_text, root_key);
    let chain = match chain_key {
        Some(name) => parse(chain_text, name),
        None => ca_certs.iter().chain(roots.iter()).cloned().collect(),
    };
    state.trusted_roots = roots.iter().map(|r| r.facts.fingerprint.clone()).collect();
    state.trusted_not_before = roots.iter().map(|r| r.facts.not_before).collect();

    let Some(ca) = ca_certs.first() else {
        return state;
    };
    state.ca_cert = Some(ca.facts.clone());
    check_signing_ca(&mut state, ca, key_text, (cert_key, key_key), now);
    if let Some(name) = chain_key
        && chain.first().map(|c| &c.der) != Some(&ca.der)
    {
        state
            .problems
            .push(format!("{name} must start with {cert_key}"));
    }
    check_issuer(&mut state, ca, &chain, &roots, (cert_key, root_key));
    state
}

/// The signing CA itself: a CA, usable for serving, already valid, and matching its key.
fn check_signing_ca(
    state: &mut CacertsState,
    ca: &ParsedCert,
    key_text: Option<String>,
    (cert_key, key_key): (&str, &str),
    now: i64,
) {
    if !ca.facts.is_ca {
        state.problems.push(format!(
            "{cert_key} is not a CA certificate (basicConstraints CA:TRUE is required)"
        ));
    }
    if ca.eku_blocks_server_auth {
        state.problems.push(format!(
            "{cert_key} has extended key usages without serverAuth; Go's chain check rejects it"
        ));
    }
    if ca.facts.not_before > now {
        state.problems.push(format!("{cert_key} is not valid yet"));
    }
    if let Some(k) = key_text {
        match key_matches(&PrivateKeyPem::from_pem(&k), ca, key_key) {
            Ok(true) => {}
            Ok(false) => state
                .problems
                .push(format!("{key_key} does not match {cert_key}")),
            Err(e) => state.problems.push(e.to_string()),
        }
    }
}

/// Finds the certificate that signed the signing CA and checks that it is anchored in `root-cert.pem`.
fn check_issuer(
    state: &mut CacertsState,
    ca: &ParsedCert,
    chain: &[ParsedCert],
    roots: &[ParsedCert],
    (cert_key, root_key): (&str, &str),
) {
    // The issuer: the signing CA itself if self-signed, else a chain or root certificate that verifies it.
    let issuer = if ca.self_signed {
        Some(ca)
    } else {
        chain
            .iter()
            .skip(1)
            .chain(roots.iter())
            .find(|candidate| signed_by(ca, candidate))
    };
    match issuer {
        Some(issuer) => {
            state.issuer_fingerprint = Some(issuer.facts.fingerprint.clone());
            // Go's x509.Verify: chain certificates are intermediates, root-cert.pem holds the anchors.
            let anchored = roots
                .iter()
                .any(|r| r.der == issuer.der || signed_by(issuer, r));
            if !anchored {
                state.problems.push(format!(
                    "the chain of {cert_key} does not end at a root in {root_key}"
                ));
            }
        }
        None => state.problems.push(format!(
            "no certificate in the chain or {root_key} signed {cert_key}"
        )),
    }
}

#[cfg(test)]
mod tests;

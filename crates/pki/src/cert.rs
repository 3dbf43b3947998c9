use meshtrust_core::facts::CertFacts;
use meshtrust_core::mesh::{KeySpec, KeyType};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

use crate::PkiError;

/// One certificate: its DER, its PEM as found, and what meshtrust needs to know about it.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    pub der: Vec<u8>,
    pub pem: String,
    pub spki_der: Vec<u8>,
    pub facts: CertFacts,
    /// The EKUs forbid serverAuth (Go's x509.Verify, which istiod uses, then rejects the chain).
    pub eku_blocks_server_auth: bool,
    pub self_signed: bool,
}

/// Every CERTIFICATE block in `text`, in order. `what` names the file in errors.
pub fn parse_certs(text: &str, what: &str) -> Result<Vec<ParsedCert>, PkiError> {
    let blocks = ::pem::parse_many(text).map_err(|e| PkiError::BadPem {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    let certs: Vec<ParsedCert> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .enumerate()
        .map(|(index, b)| parse_der(b.contents(), what, index + 1))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

fn parse_der(der: &[u8], what: &str, index: usize) -> Result<ParsedCert, PkiError> {
    let bad = |reason: String| PkiError::BadCertificate {
        what: what.to_string(),
        index,
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let facts = cert_facts(&cert, der);
    let eku_blocks_server_auth = match cert.extended_key_usage() {
        Ok(Some(eku)) => !(eku.value.any || eku.value.server_auth),
        _ => false,
    };
    let self_signed = cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok();
    let pem = ::pem::encode_config(
        &::pem::Pem::new("CERTIFICATE", der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    );
    Ok(ParsedCert {
        der: der.to_vec(),
        pem,
        spki_der: cert.tbs_certificate.subject_pki.raw.to_vec(),
        facts,
        eku_blocks_server_auth,
        self_signed,
    })
}

pub fn cert_facts(cert: &X509Certificate<'_>, der: &[u8]) -> CertFacts {
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    CertFacts {
        serial: normalize_serial(&cert.raw_serial_as_string()),
        fingerprint: hex::encode(Sha256::digest(der)),
        subject_cn,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key: key_spec(cert),
        is_ca,
    }
}

/// DER keeps a leading zero byte on serials whose top bit is set; OpenBao prints them without it.
fn normalize_serial(serial: &str) -> String {
    let mut s = serial;
    while let Some(rest) = s.strip_prefix("00:") {
        s = rest;
    }
    s.to_string()
}

fn key_spec(cert: &X509Certificate<'_>) -> Option<KeySpec> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
        if let Ok(PublicKey::RSA(rsa)) = spki.parsed() {
            return Some(KeySpec {
                key_type: KeyType::Rsa,
                bits: rsa.key_size() as u32,
            });
        }
    } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())?;
        if curve == OID_EC_P256 {
            return Some(KeySpec {
                key_type: KeyType::Ec,
                bits: 256,
            });
        }
        if curve == OID_NIST_EC_P384 {
            return Some(KeySpec {
                key_type: KeyType::Ec,
                bits: 384,
            });
        }
    }
    None
}

/// True when `issuer`'s key made `child`'s signature and the names chain.
pub fn signed_by(child: &ParsedCert, issuer: &ParsedCert) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (
        X509Certificate::from_der(&child.der),
        X509Certificate::from_der(&issuer.der),
    ) else {
        return false;
    };
    c.issuer() == i.subject() && c.verify_signature(Some(i.public_key())).is_ok()
}

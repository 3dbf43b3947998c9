use std::fmt;

use meshtrust_core::mesh::{KeySpec, KeyType};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, RsaKeySize};
use zeroize::Zeroizing;

use crate::PkiError;
use crate::cert::ParsedCert;

/// A private key in PEM (PKCS#8). It cannot be printed: `Debug` is redacted and there is no `Display`.
/// Its memory is wiped on drop.
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    pub fn from_pem(pem: &str) -> Self {
        PrivateKeyPem(Zeroizing::new(pem.to_string()))
    }

    /// The PEM text, for writing into a Secret or KV. Never log it.
    pub fn expose_pem(&self) -> &str {
        &self.0
    }

    pub(crate) fn key_pair(&self, what: &str) -> Result<KeyPair, PkiError> {
        KeyPair::from_pem(&self.0).map_err(|e| PkiError::BadKey {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// Generates a key where it will be used: ECDSA P-256/P-384 (instant) or RSA (about a second at 4096 bits).
pub fn generate_key(spec: KeySpec) -> Result<PrivateKeyPem, PkiError> {
    let err = |e: rcgen::Error| PkiError::Generate(e.to_string());
    let pair = match (spec.key_type, spec.bits) {
        (KeyType::Ec, 256) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?,
        (KeyType::Ec, 384) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(err)?,
        (KeyType::Rsa, bits) => {
            let size = match bits {
                2048 => RsaKeySize::_2048,
                3072 => RsaKeySize::_3072,
                4096 => RsaKeySize::_4096,
                other => return Err(PkiError::Generate(format!("unsupported RSA size {other}"))),
            };
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(err)?
        }
        (KeyType::Ec, other) => {
            return Err(PkiError::Generate(format!("unsupported EC size {other}")));
        }
    };
    Ok(PrivateKeyPem(Zeroizing::new(pair.serialize_pem())))
}

/// A CSR for a cluster's intermediate. OpenBao ignores its extensions (`use_csr_values` is never set and
/// policy forbids it); the subject it signs is the one meshtrust asks for.
pub fn intermediate_csr(
    key: &PrivateKeyPem,
    common_name: &str,
    organization: &str,
) -> Result<String, PkiError> {
    let pair = key.key_pair("generated key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&pair)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    csr.pem().map_err(|e| PkiError::Generate(e.to_string()))
}

/// True when `key` is the private half of the certificate's public key.
pub fn key_matches(key: &PrivateKeyPem, cert: &ParsedCert, what: &str) -> Result<bool, PkiError> {
    let pair = key.key_pair(what)?;
    Ok(pair.subject_public_key_info() == cert.spki_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = generate_key(KeySpec {
            key_type: KeyType::Ec,
            bits: 256,
        })
        .expect("key");
        assert!(key.expose_pem().contains("PRIVATE KEY"));
        assert_eq!(format!("{key:?}"), "PrivateKeyPem(<redacted>)");
    }

    #[test]
    fn csr_is_pem() {
        let key = generate_key(KeySpec {
            key_type: KeyType::Ec,
            bits: 384,
        })
        .expect("key");
        let csr =
            intermediate_csr(&key, "cluster-a intermediate CA (mesh1)", "Istio").expect("csr");
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    #[test]
    fn garbage_key_is_a_clear_error_without_content() {
        let key = PrivateKeyPem::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let err = key.key_pair("ca-key.pem").unwrap_err().to_string();
        assert!(err.starts_with("ca-key.pem: not a private key"), "{err}");
        assert!(!err.contains("AAAA"));
    }
}

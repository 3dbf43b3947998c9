//! seed 001's shared root: a self-signed RSA root generated locally and kept in KV. Only for `ca.mode:
//! shared-root`; meshtrust's default keeps the root key inside OpenBao instead.

use std::collections::BTreeMap;

use meshtrust_core::mesh::RootSettings;
use meshtrust_core::secret::SecretBytes;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::{PkiError, PrivateKeyPem, generate_key};

/// The KV field names seed 001's bootstrap Job writes.
pub const ROOT_CERT_FIELD: &str = "root-cert.pem";
pub const CERT_CHAIN_FIELD: &str = "cert-chain.pem";
pub const KEY_FIELD: &str = "key.pem";

pub struct SharedRoot {
    pub cert_pem: String,
    pub key: PrivateKeyPem,
}

impl SharedRoot {
    /// Generates the root. `now` is Unix seconds.
    pub fn generate(settings: &RootSettings, now: i64) -> Result<Self, PkiError> {
        let key = generate_key(settings.key)?;
        let pair = key.key_pair("generated root key")?;
        let err = |e: rcgen::Error| PkiError::Generate(e.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, settings.common_name.as_str());
        dn.push(DnType::OrganizationName, settings.organization.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let start = OffsetDateTime::from_unix_timestamp(now)
            .map_err(|e| PkiError::Generate(e.to_string()))?;
        params.not_before = start - Duration::minutes(5);
        // The mesh file bounds ttl, but a library caller may not have: refuse rather than panic on overflow.
        params.not_after = i64::try_from(settings.ttl.seconds())
            .ok()
            .and_then(|s| start.checked_add(Duration::seconds(s)))
            .ok_or_else(|| {
                PkiError::Generate(format!(
                    "root ttl {} ends beyond the year 9999; use a shorter ca.root.ttl",
                    settings.ttl
                ))
            })?;
        let cert = params.self_signed(&pair).map_err(err)?;
        Ok(SharedRoot {
            cert_pem: cert.pem(),
            key,
        })
    }

    pub fn to_kv(&self) -> BTreeMap<String, SecretBytes> {
        BTreeMap::from([
            (
                ROOT_CERT_FIELD.to_string(),
                SecretBytes::new(self.cert_pem.clone()),
            ),
            (
                CERT_CHAIN_FIELD.to_string(),
                SecretBytes::new(self.cert_pem.clone()),
            ),
            (
                KEY_FIELD.to_string(),
                SecretBytes::new(self.key.expose_pem().to_string()),
            ),
        ])
    }

    pub fn from_kv(data: &BTreeMap<String, SecretBytes>) -> Option<Self> {
        let cert_pem = data.get(ROOT_CERT_FIELD)?.expose_str()?.to_string();
        let key = PrivateKeyPem::from_pem(data.get(KEY_FIELD)?.expose_str()?);
        Some(SharedRoot { cert_pem, key })
    }
}

//! The little PKI the fake OpenBao needs: an ECDSA root whose key stays inside the fake, and intermediates
//! signed from a CSR with the constraints meshtrust asks for (the CN it names, CA with pathlen 0).

use meshtrust_core::ports::{RootRequest, SignRequest};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub(crate) struct Root {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, now: i64, ttl_seconds: u64) -> Result<(), String> {
    let start = OffsetDateTime::from_unix_timestamp(now).map_err(|e| e.to_string())?;
    params.not_before = start - Duration::minutes(5);
    params.not_after = start + Duration::seconds(ttl_seconds.min(i64::MAX as u64) as i64);
    Ok(())
}

fn name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

pub(crate) fn generate_root(request: &RootRequest, now: i64, serial: u64) -> Result<Root, String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = name(&request.common_name, &request.organization);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from(serial));
    validity(&mut params, now, request.ttl.seconds())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(Root {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A root's certificate (the first CERTIFICATE block) and key (the PRIVATE KEY block) from a PEM bundle,
/// as OpenBao's `issuers/import/bundle` takes it.
pub(crate) fn split_bundle(bundle: &str) -> Option<Root> {
    let block = |tag: &str| -> Option<String> {
        let begin = format!("-----BEGIN {tag}-----");
        let end = format!("-----END {tag}-----");
        let start = bundle.find(&begin)?;
        let stop = bundle[start..].find(&end)? + start + end.len();
        Some(format!("{}\n", &bundle[start..stop]))
    };
    Some(Root {
        cert_pem: block("CERTIFICATE")?,
        key_pem: block("PRIVATE KEY").or_else(|| block("RSA PRIVATE KEY"))?,
    })
}

/// Signs `request.csr_pem` with `root` as OpenBao's `sign-intermediate` would: the CN and O from the request,
/// never from the CSR.
pub(crate) fn sign_intermediate(
    root: &Root,
    request: &SignRequest,
    now: i64,
    serial: u64,
) -> Result<String, String> {
    let key = KeyPair::from_pem(&root.key_pem).map_err(|e| e.to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&root.cert_pem, key).map_err(|e| e.to_string())?;
    let mut csr = CertificateSigningRequestParams::from_pem(&request.csr_pem)
        .map_err(|e| format!("the CSR does not parse: {e}"))?;
    let params = &mut csr.params;
    params.distinguished_name = name(&request.common_name, &request.organization);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.extended_key_usages = vec![];
    params.subject_alt_names = vec![];
    params.serial_number = Some(SerialNumber::from(serial));
    validity(params, now, request.ttl.seconds())?;
    let cert = csr.signed_by(&issuer).map_err(|e| e.to_string())?;
    Ok(cert.pem())
}

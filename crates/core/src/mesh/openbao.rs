//! The `openbao` section: where OpenBao is and which mounts meshtrust uses.

use super::OpenBaoSettings;
use super::check::{Checker, is_mount_path};
use super::schema::RawOpenBao;

pub(super) fn validate(ob: RawOpenBao, c: &mut Checker) -> OpenBaoSettings {
    if let Some(addr) = &ob.address
        && !(addr.starts_with("http://") || addr.starts_with("https://"))
    {
        c.problem(
            "openbao.address",
            format!("{addr:?} must start with https:// (or http:// for a local dev server)"),
        );
    }
    let ca_cert = ob.ca_cert.filter(|pem| !pem.trim().is_empty());
    if let Some(pem) = &ca_cert
        && !(pem.contains("-----BEGIN CERTIFICATE-----")
            && pem.contains("-----END CERTIFICATE-----"))
    {
        c.problem(
            "openbao.caCert",
            "is not a PEM certificate; give the CA that signed OpenBao's TLS certificate as a block, `caCert: |` then the lines from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE----- indented",
        );
    }
    let kv_mount = ob.kv_mount.unwrap_or_else(|| "secret".into());
    let pki_mount = ob.pki_mount.unwrap_or_else(|| "pki".into());
    for (path, value) in [
        ("openbao.kvMount", &kv_mount),
        ("openbao.pkiMount", &pki_mount),
    ] {
        if !is_mount_path(value) {
            c.problem(path, format!("{value:?} is not a mount path; use letters, digits, '-', '_' and no leading or trailing '/'"));
        }
    }
    if let Some(ns) = &ob.namespace
        && !is_mount_path(ns)
    {
        c.problem(
            "openbao.namespace",
            format!("{ns:?} is not a namespace path such as \"production\" or \"team/prod\""),
        );
    }
    OpenBaoSettings {
        address: ob.address,
        ca_cert,
        namespace: ob.namespace,
        kv_mount,
        pki_mount,
    }
}

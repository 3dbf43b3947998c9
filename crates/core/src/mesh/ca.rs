//! The `ca` section: the CA mode, the cacerts key layout, and the root and intermediate certificates.

use super::check::{Checker, is_mount_path};
use super::schema::{RawCa, RawImportRoot, RawIntermediate, RawRoot};
use super::{
    CaMode, CaSettings, ImportRoot, IntermediateSettings, KeySpec, KeyType, RootSettings,
    SecretFormat,
};

pub(super) fn validate(ca: RawCa, mesh_id: &str, c: &mut Checker) -> CaSettings {
    let mode = mode(ca.mode.as_deref(), c);
    let secret_format = secret_format(ca.secret_format.as_deref(), c);
    let root = root(ca.root, mesh_id, c);
    let intermediate = intermediate(ca.intermediate, c);
    if intermediate.renew_before >= intermediate.ttl {
        c.problem(
            "ca.intermediate.renewBefore",
            format!("{} is not shorter than ttl {}; it would renew on every run. Make it a fraction of the ttl (default 720h of 8760h)", intermediate.renew_before, intermediate.ttl),
        );
    }
    if intermediate.ttl >= root.ttl {
        c.problem(
            "ca.intermediate.ttl",
            format!(
                "{} must be shorter than the root's ttl {}",
                intermediate.ttl, root.ttl
            ),
        );
    }
    for (path, value) in [
        ("ca.root.commonName", &root.common_name),
        ("ca.root.organization", &root.organization),
        ("ca.intermediate.organization", &intermediate.organization),
    ] {
        c.plain_text(path, value);
    }
    let shared_root_kv_path = ca.shared_root_kv_path.unwrap_or_else(|| "istio/ca".into());
    if !is_mount_path(&shared_root_kv_path) {
        c.problem(
            "ca.sharedRootKvPath",
            format!("{shared_root_kv_path:?} is not a KV path such as istio/ca"),
        );
    }
    let phase_dwell = c.span(
        "ca.rootRotation.phaseDwell",
        ca.root_rotation.phase_dwell.as_deref(),
        "24h",
    );
    // Checked only when set: the 24h default must not refuse meshes with short-lived intermediates.
    if ca.root_rotation.phase_dwell.is_some() && phase_dwell >= intermediate.ttl {
        c.problem(
            "ca.rootRotation.phaseDwell",
            format!("{phase_dwell} is not shorter than the intermediate ttl {}; the old root would outlive the intermediates it should retire. Use the workload certificate TTL (default 24h)", intermediate.ttl),
        );
    }
    let import_root = import_root(ca.import_root, mode, c);
    CaSettings {
        phase_dwell,
        import_root,
        mode,
        secret_format,
        root,
        intermediate,
        shared_root_kv_path,
    }
}

fn mode(value: Option<&str>, c: &mut Checker) -> CaMode {
    match value {
        None | Some("bao-pki") => CaMode::BaoPki,
        Some("shared-root") => CaMode::SharedRoot,
        Some(other) => {
            c.problem(
                "ca.mode",
                format!("{other:?} is not a mode; use \"bao-pki\" (default) or \"shared-root\""),
            );
            CaMode::BaoPki
        }
    }
}

fn secret_format(value: Option<&str>, c: &mut Checker) -> SecretFormat {
    match value {
        None | Some("istio") => SecretFormat::Istio,
        Some("tls") => SecretFormat::Tls,
        Some(other) => {
            c.problem(
                "ca.secretFormat",
                format!("{other:?} is not a format; use \"istio\" (default) or \"tls\""),
            );
            SecretFormat::Istio
        }
    }
}

fn root(root: RawRoot, mesh_id: &str, c: &mut Checker) -> RootSettings {
    RootSettings {
        common_name: root
            .common_name
            .unwrap_or_else(|| format!("meshtrust root CA ({mesh_id})")),
        organization: root.organization.unwrap_or_else(|| "Istio".into()),
        key: c.key(
            "ca.root",
            root.key_type.as_deref(),
            root.key_bits,
            KeySpec {
                key_type: KeyType::Rsa,
                bits: 4096,
            },
        ),
        ttl: c.span("ca.root.ttl", root.ttl.as_deref(), "87600h"),
    }
}

fn intermediate(intermediate: RawIntermediate, c: &mut Checker) -> IntermediateSettings {
    IntermediateSettings {
        key: c.key(
            "ca.intermediate",
            intermediate.key_type.as_deref(),
            intermediate.key_bits,
            KeySpec {
                key_type: KeyType::Ec,
                bits: 256,
            },
        ),
        ttl: c.span("ca.intermediate.ttl", intermediate.ttl.as_deref(), "8760h"),
        renew_before: c.span(
            "ca.intermediate.renewBefore",
            intermediate.renew_before.as_deref(),
            "720h",
        ),
        organization: intermediate.organization.unwrap_or_else(|| "Istio".into()),
    }
}

/// `ca.importRoot`: one source, in bao-pki mode only (shared-root mode keeps its bundle in KV by design).
fn import_root(raw: Option<RawImportRoot>, mode: CaMode, c: &mut Checker) -> Option<ImportRoot> {
    let raw = raw?;
    let import = match (raw.kv_path, raw.issuer) {
        (Some(_), Some(_)) => {
            c.problem(
                "ca.importRoot",
                "sets both kvPath and issuer; set kvPath for a bundle kept in KV (seed 001) or issuer for a root already in the PKI mount (seed 000)".to_string(),
            );
            return None;
        }
        (None, None) => {
            c.problem(
                "ca.importRoot",
                "sets neither kvPath nor issuer; set one, or remove importRoot".to_string(),
            );
            return None;
        }
        (Some(path), None) => {
            if !is_mount_path(&path) {
                c.problem(
                    "ca.importRoot.kvPath",
                    format!("{path:?} is not a KV path such as istio/ca (no leading or trailing /, no data/ prefix)"),
                );
            } else if path.starts_with("data/") || path.starts_with("metadata/") {
                c.problem(
                    "ca.importRoot.kvPath",
                    format!("{path:?} names the KV v2 API path; give the path as `bao kv get` takes it, such as istio/ca"),
                );
            }
            ImportRoot::KvPath(path)
        }
        (None, Some(issuer)) => {
            let valid = !issuer.is_empty()
                && issuer
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !valid {
                c.problem(
                    "ca.importRoot.issuer",
                    format!("{issuer:?} is not an issuer name or ID (letters, digits, - and _); see `bao list pki/issuers`"),
                );
            } else if issuer == "default" {
                c.problem(
                    "ca.importRoot.issuer",
                    "\"default\" follows whichever issuer is the mount's default; name the root's issuer by its name or ID (`bao list -detailed pki/issuers`)".to_string(),
                );
            } else if crate::names::root_generation(&issuer).is_some() {
                c.problem(
                    "ca.importRoot.issuer",
                    format!("{issuer:?} is already one of meshtrust's roots; remove importRoot"),
                );
            }
            ImportRoot::Issuer(issuer)
        }
    };
    if mode != CaMode::BaoPki {
        c.problem(
            "ca.importRoot",
            "works only with ca.mode bao-pki: the imported root becomes the PKI engine's first root generation".to_string(),
        );
    }
    Some(import)
}

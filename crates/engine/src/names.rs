//! Names and marks meshtrust puts on what it owns.

use std::collections::BTreeMap;

/// The label every object meshtrust writes carries; objects without it are never modified.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "meshtrust";
pub const CACERTS: &str = "cacerts";
pub const REMOTE_SECRET_PREFIX: &str = "istio-remote-secret-";
/// On `cacerts`: the intermediate's serial, for `kubectl get -o yaml` readers.
pub const SERIAL_ANNOTATION: &str = "meshtrust.dev/ca-serial";
/// On `cacerts`: the fingerprints of the roots in `root-cert.pem`.
pub const ROOTS_ANNOTATION: &str = "meshtrust.dev/root-fingerprints";
/// On a remote secret: the KV version it was synced from.
pub const KV_VERSION_ANNOTATION: &str = "meshtrust.dev/kv-version";

pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())])
}

pub use meshtrust_core::facts::root_issuer_name;

/// The generation of a `meshtrust-root-N` issuer; `None` for any other issuer.
pub fn root_generation(issuer_name: &str) -> Option<u32> {
    issuer_name.strip_prefix("meshtrust-root-")?.parse().ok()
}

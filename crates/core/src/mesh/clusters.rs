//! The `clusters` list: each cluster's name (Istio's cluster ID), kubeconfig, network and OpenBao auth mount.

use std::collections::BTreeSet;
use std::path::Path;

use super::ClusterSettings;
use super::check::{Checker, is_dns_label, is_mount_path, is_yaml_plain};
use super::schema::RawCluster;
use super::url::https_url_problem;

pub(super) fn validate(
    raw: Vec<RawCluster>,
    base_dir: &Path,
    c: &mut Checker,
) -> Vec<ClusterSettings> {
    if raw.is_empty() {
        c.problem(
            "clusters",
            "no clusters; list at least one, each with a name and a kubeconfig",
        );
    }
    let mut names = BTreeSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, rc)| cluster(i, rc, &mut names, base_dir, c))
        .collect()
}

fn cluster(
    i: usize,
    rc: RawCluster,
    names: &mut BTreeSet<String>,
    base_dir: &Path,
    c: &mut Checker,
) -> ClusterSettings {
    let at = |field: &str| format!("clusters[{i}].{field}");
    let name = rc.name.unwrap_or_default();
    if name.is_empty() {
        c.problem(
            at("name"),
            "missing; every cluster needs a name (it becomes Istio's cluster ID)",
        );
    } else if !is_dns_label(&name) {
        c.problem(at("name"), format!("{name:?} must be a DNS label (lowercase letters, digits, '-'), as Istio's clusterName"));
    } else if !is_yaml_plain(&name) {
        c.problem(at("name"), format!("{name:?} would read as a number, boolean or null in YAML (Istio's values, kubeconfigs); start it with a letter and avoid true/false/yes/no/on/off/null"));
    } else if !names.insert(name.clone()) {
        c.problem(
            at("name"),
            format!("{name:?} appears twice; cluster names must be unique"),
        );
    }
    if let Some(api) = &rc.api_server
        && let Some(why) = https_url_problem(api)
    {
        c.problem(
            at("apiServer"),
            format!(
                "{api:?} {why}; write the https://host[:port] URL peers reach the API server at"
            ),
        );
    }
    if let Some(network) = &rc.network
        && !is_yaml_plain(network)
    {
        c.problem(
            at("network"),
            format!("{network:?} must start with a letter and hold only letters, digits, '-', '_', '.' (and not read as a YAML boolean or null), as Istio's network names"),
        );
    }
    let auth_mount = rc
        .auth_mount
        .unwrap_or_else(|| format!("kubernetes_{}", name.replace('-', "_")));
    if !is_mount_path(&auth_mount) {
        c.problem(
            at("authMount"),
            format!("{auth_mount:?} is not a mount path"),
        );
    }
    let istio_namespace = rc.istio_namespace.unwrap_or_else(|| "istio-system".into());
    if !is_dns_label(&istio_namespace) {
        c.problem(
            at("istioNamespace"),
            format!("{istio_namespace:?} must be a DNS label"),
        );
    }
    ClusterSettings {
        network: rc.network.unwrap_or_else(|| format!("network-{name}")),
        kubeconfig: rc.kubeconfig.map(|k| base_dir.join(k)),
        context: rc.context,
        api_server: rc.api_server,
        auth_mount,
        istio_namespace,
        name,
    }
}

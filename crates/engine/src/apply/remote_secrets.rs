//! Applying cross-cluster discovery: the reader identity, publishing a cluster's reader kubeconfig to
//! OpenBao, syncing peers' kubeconfigs into `istio-remote-secret-<peer>`, and removing departed peers.

use std::collections::BTreeMap;

use meshtrust_core::bao_plan::desired_host;
use meshtrust_core::istio::{
    CLUSTER_ANNOTATION, MULTICLUSTER_LABEL, READER_SERVICE_ACCOUNT, reader_kubeconfig,
    remote_secret_name,
};
use meshtrust_core::legacy_token::legacy_token_secret_name;
use meshtrust_core::mesh::ClusterSettings;
use meshtrust_core::plan::Action;
use meshtrust_core::ports::SecretObject;
use meshtrust_core::secret::SecretBytes;

use super::{RunState, Targets};
use crate::EngineError;
use crate::names::{
    FORMAT_ANNOTATION, FORMAT_VERSION, KV_VERSION_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use crate::observe::is_legacy_token;
use crate::published::{
    Wrote, bump_marker, config_hash, current_version, entry_data, fetch, kubeconfig_path,
    unknown_fields,
};
use crate::reader::ensure_reader;

pub(super) async fn apply(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    action: &Action,
) -> Result<String, EngineError> {
    match action {
        Action::EnsureReader { cluster } => {
            let found = run
                .snapshot()
                .readers
                .get(cluster)
                .cloned()
                .unwrap_or_default();
            let settings = targets.settings(cluster)?;
            ensure_reader(targets.cluster(cluster)?, settings, &found).await
        }
        Action::PublishRemoteSecret { cluster } => {
            let published = publish(targets, targets.settings(cluster)?).await?;
            let detail = format!(
                "published version {}; the reader token expires {}",
                published.version,
                meshtrust_core::duration::when(published.token_expires, run.snapshot().facts().now)
            );
            run.published
                .insert(cluster.clone(), (published.kubeconfig, published.version));
            Ok(detail)
        }
        Action::SyncRemoteSecret { cluster, peer } => sync(targets, run, cluster, peer).await,
        Action::DeleteRemoteSecret { cluster, peer } => {
            let settings = targets.settings(cluster)?;
            let existing = run
                .snapshot()
                .remote_secrets
                .get(cluster)
                .and_then(|m| m.get(peer))
                .ok_or_else(|| {
                    EngineError::Inconsistent(format!(
                        "cluster {cluster}: the remote secret for {peer} vanished; run apply again"
                    ))
                })?;
            let rv = existing.resource_version.clone().unwrap_or_default();
            targets
                .cluster(cluster)?
                .delete_secret(&settings.istio_namespace, &existing.name, &rv)
                .await?;
            Ok(format!("deleted {}", existing.name))
        }
        Action::DeleteLegacyReaderToken { cluster } => {
            delete_legacy_token(targets, targets.settings(cluster)?).await
        }
        Action::UnpublishRemoteSecret { cluster } => {
            targets
                .bao
                .kv_delete(
                    &targets.mesh.openbao.kv_mount,
                    &kubeconfig_path(targets.mesh, cluster),
                )
                .await?;
            Ok(format!("removed {cluster}'s published entry from KV"))
        }
        other => Err(EngineError::Inconsistent(format!(
            "{other:?} is not a remote-secret change"
        ))),
    }
}

struct Published {
    kubeconfig: SecretBytes,
    version: u64,
    token_expires: i64,
}

/// Mints a bound reader token, builds the kubeconfig peers will use, publishes it with check-and-set and bumps
/// the index.
async fn publish(
    targets: &Targets<'_>,
    settings: &ClusterSettings,
) -> Result<Published, EngineError> {
    let (mesh, bao) = (targets.mesh, targets.bao);
    let cluster = targets.cluster(&settings.name)?;
    let host = desired_host(settings, cluster.server());
    let ca = cluster.api_ca_pem().ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "cluster {}: its kubeconfig has no certificate-authority-data, so peers could not verify its API server",
            settings.name
        ))
    })?;
    if !host.starts_with("https://") {
        return Err(EngineError::Inconsistent(format!(
            "cluster {}: API address {host} is not https; set clusters[].apiServer",
            settings.name
        )));
    }
    let ttl = mesh.remote_secrets.token_ttl.seconds() as i64;
    let token = cluster
        .request_token(&settings.istio_namespace, READER_SERVICE_ACCOUNT, ttl)
        .await?;
    let text = token
        .token
        .expose_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "cluster {}: TokenRequest returned an empty token",
                settings.name
            ))
        })?;
    // istiod does not retry a kubeconfig it cannot use, so only a complete one is ever published.
    let kubeconfig = SecretBytes::new(reader_kubeconfig(&settings.name, &host, ca, text));
    let kv = &mesh.openbao.kv_mount;
    let path = kubeconfig_path(mesh, &settings.name);
    // The entry as stored: its version for check-and-set, and what a newer release added to it, which is kept.
    let (current, mut data) = match bao.kv_get(kv, &path).await? {
        Some(entry) => (entry.version, unknown_fields(&settings.name, &entry.data)),
        None => (current_version(bao, kv, &path).await?, BTreeMap::new()),
    };
    let hash = config_hash(&host, Some(ca));
    data.extend(entry_data(
        &settings.name,
        &kubeconfig,
        &host,
        token.expires,
        &hash,
    ));
    let version = bao.kv_put(kv, &path, &data, current).await?;
    // After the entry: a peer that sees the bump reads the new version.
    bump_marker(bao, mesh, &settings.name, Wrote::Entry).await?;
    Ok(Published {
        kubeconfig,
        version,
        token_expires: token.expires,
    })
}

async fn sync(
    targets: &Targets<'_>,
    run: &RunState<'_>,
    cluster: &str,
    peer: &str,
) -> Result<String, EngineError> {
    let settings = targets.settings(cluster)?;
    let read = run
        .published(peer)
        .or_else(|| run.snapshot().peer_kubeconfigs.get(peer));
    let (kubeconfig, version) = match read {
        Some(known) => known.clone(),
        None => fetch(targets.bao, targets.mesh, peer).await?,
    };
    let existing = run
        .snapshot()
        .remote_secrets
        .get(cluster)
        .and_then(|m| m.get(peer));
    let secret = remote_secret(settings, peer, kubeconfig, version, existing);
    let target = targets.cluster(cluster)?;
    if existing.is_some() {
        target.replace_secret(&secret).await?;
    } else {
        target.create_secret(&secret).await?;
    }
    Ok(format!("{} from KV version {version}", secret.name))
}

/// Deletes istioctl's long-lived reader token Secret, read again just before so that only that Secret, as the
/// API server keeps it, goes (conditional on its resourceVersion).
async fn delete_legacy_token(
    targets: &Targets<'_>,
    settings: &ClusterSettings,
) -> Result<String, EngineError> {
    let cluster = targets.cluster(&settings.name)?;
    let name = legacy_token_secret_name();
    let found = cluster.get_secret(&settings.istio_namespace, &name).await?;
    if !is_legacy_token(found.as_ref()) {
        return Ok(format!("{name} is already gone"));
    }
    let rv = found.and_then(|s| s.resource_version).unwrap_or_default();
    cluster
        .delete_secret(&settings.istio_namespace, &name, &rv)
        .await?;
    Ok(format!(
        "deleted {name}: istioctl's never-expiring token for {} no longer authenticates",
        settings.name
    ))
}

/// The Secret istiod reads for `peer`: istioctl's name, label, annotation and data key, plus meshtrust's marks.
pub(crate) fn remote_secret(
    settings: &ClusterSettings,
    peer: &str,
    kubeconfig: SecretBytes,
    version: u64,
    existing: Option<&SecretObject>,
) -> SecretObject {
    let mut secret = existing.cloned().unwrap_or_else(|| SecretObject {
        namespace: settings.istio_namespace.clone(),
        name: remote_secret_name(peer),
        ..Default::default()
    });
    // Handed over (the plan blocks while another controller owns it): its leftover marks go.
    meshtrust_core::handover::strip_marks(&mut secret);
    secret
        .labels
        .insert(MULTICLUSTER_LABEL.into(), "true".into());
    secret
        .labels
        .insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    secret
        .annotations
        .insert(CLUSTER_ANNOTATION.into(), peer.into());
    secret
        .annotations
        .insert(KV_VERSION_ANNOTATION.into(), version.to_string());
    secret
        .annotations
        .insert(FORMAT_ANNOTATION.into(), FORMAT_VERSION.to_string());
    secret.data = BTreeMap::from([(peer.to_string(), kubeconfig)]);
    secret.type_ = None;
    secret
}

//! The `remoteSecrets` section: where remote secrets are published and how long their tokens live.

use super::check::{Checker, is_mount_path};
use super::schema::RawRemoteSecrets;
use super::{ReaderIdentity, RemoteSecretSettings};
use crate::duration::Span;

pub(super) fn validate(raw: RawRemoteSecrets, c: &mut Checker) -> RemoteSecretSettings {
    let remote_secrets = RemoteSecretSettings {
        kv_path: raw.kv_path.unwrap_or_else(|| "istio/remote-secrets".into()),
        index_path: raw
            .index_path
            .unwrap_or_else(|| "istio/meshtrust-index".into()),
        token_ttl: c.span("remoteSecrets.tokenTtl", raw.token_ttl.as_deref(), "24h"),
        refresh_before: c.span(
            "remoteSecrets.refreshBefore",
            raw.refresh_before.as_deref(),
            "8h",
        ),
        reader_identity: reader_identity(raw.reader_identity.as_deref(), c),
    };
    check_lifetimes(&remote_secrets, c);
    check_paths(&remote_secrets, c);
    remote_secrets
}

fn reader_identity(value: Option<&str>, c: &mut Checker) -> ReaderIdentity {
    match value {
        None | Some("meshtrust") => ReaderIdentity::Meshtrust,
        Some("istio") => ReaderIdentity::Istio,
        Some(other) => {
            c.problem(
                "remoteSecrets.readerIdentity",
                format!(
                    "{other:?} is not an owner; use \"meshtrust\" (default) or \"istio\" (Istio's charts install it, as on a mesh that runs already)"
                ),
            );
            ReaderIdentity::Meshtrust
        }
    }
}

fn check_lifetimes(remote_secrets: &RemoteSecretSettings, c: &mut Checker) {
    if remote_secrets.refresh_before >= remote_secrets.token_ttl {
        c.problem(
            "remoteSecrets.refreshBefore",
            format!(
                "{} is not shorter than tokenTtl {}; every run would publish a new token",
                remote_secrets.refresh_before, remote_secrets.token_ttl
            ),
        );
    }
    if remote_secrets.token_ttl < Span(600) {
        c.problem(
            "remoteSecrets.tokenTtl",
            "must be at least 10m (Kubernetes' minimum for TokenRequest)",
        );
    }
}

fn check_paths(remote_secrets: &RemoteSecretSettings, c: &mut Checker) {
    for (path, value) in [
        ("remoteSecrets.kvPath", &remote_secrets.kv_path),
        ("remoteSecrets.indexPath", &remote_secrets.index_path),
    ] {
        if !is_mount_path(value) {
            c.problem(
                path,
                format!("{value:?} is not a KV path such as istio/remote-secrets"),
            );
        }
    }
    if remote_secrets
        .index_path
        .starts_with(&format!("{}/", remote_secrets.kv_path))
    {
        c.problem(
            "remoteSecrets.indexPath",
            "must not lie under remoteSecrets.kvPath, where each cluster may read every entry",
        );
    }
}

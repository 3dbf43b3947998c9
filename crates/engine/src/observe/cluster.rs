//! Observing one cluster: its Istio namespace, `cacerts`, the reader identity peers use, and the remote
//! secrets it holds.

use std::collections::BTreeMap;

use meshtrust_core::bao_plan::desired_host;
use meshtrust_core::facts::{
    CacertsFacts, ClusterApiFacts, ClusterFacts, ObjectState, ReaderFacts, RemoteSecretFacts,
};
use meshtrust_core::istio::{MULTICLUSTER_LABEL, READER_SERVICE_ACCOUNT, reader_cluster_role_name};
use meshtrust_core::legacy_token::legacy_token_secret_name;
use meshtrust_core::mesh::ClusterSettings;
use meshtrust_core::ports::{Cluster, KubeObject, ObjectKind, SecretObject};
use meshtrust_pki::cacerts::inspect;

use crate::EngineError;
use crate::names::{CACERTS, KV_VERSION_ANNOTATION, is_managed, remote_secret_peer};
use crate::published::config_hash;
use crate::reader::{desired_reader, is_up_to_date};
use crate::snapshot::ReaderObjects;

/// One cluster's facts and the objects behind them.
pub(crate) struct ClusterFound {
    pub name: String,
    pub facts: ClusterFacts,
    pub cacerts: Option<SecretObject>,
    pub reader: ReaderObjects,
    pub remote_secrets: BTreeMap<String, SecretObject>,
}

/// What `apply --openbao-only` needs of a cluster: how its API server is reached and trusted (from its
/// kubeconfig, no request). Everything inside it is left to its agent, so nothing is read there.
pub(crate) fn api_only(cluster: &dyn Cluster, settings: &ClusterSettings) -> ClusterFound {
    ClusterFound {
        name: settings.name.clone(),
        facts: ClusterFacts {
            namespace_exists: false,
            cacerts: CacertsFacts::Absent,
            api: api_facts(cluster),
            reader: ReaderFacts::default(),
            remote_secrets: BTreeMap::new(),
            desired_config_hash: desired_config_hash(cluster, settings),
            claims: BTreeMap::new(),
            legacy_reader_token: false,
            unmanaged_roots: Vec::new(),
        },
        cacerts: None,
        reader: ReaderObjects::default(),
        remote_secrets: BTreeMap::new(),
    }
}

fn api_facts(cluster: &dyn Cluster) -> ClusterApiFacts {
    ClusterApiFacts {
        server: cluster.server().to_string(),
        ca_pem: cluster.api_ca_pem().map(str::to_string),
    }
}

fn desired_config_hash(cluster: &dyn Cluster, settings: &ClusterSettings) -> String {
    config_hash(
        &desired_host(settings, cluster.server()),
        cluster.api_ca_pem(),
    )
}

/// `with_data`: keep the remote secrets' kubeconfigs (the admin's `verify` checks them); an agent needs only their
/// metadata to decide.
pub(crate) async fn observe_cluster(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
    now: i64,
    with_data: bool,
) -> Result<ClusterFound, EngineError> {
    let namespace_exists = cluster.namespace_exists(&settings.istio_namespace).await?;
    let cacerts = if namespace_exists {
        cluster
            .get_secret(&settings.istio_namespace, CACERTS)
            .await?
    } else {
        None
    };
    let cacerts_facts = match &cacerts {
        None => CacertsFacts::Absent,
        Some(s) if !is_managed(&s.labels) => CacertsFacts::Unmanaged,
        Some(s) => CacertsFacts::Managed(inspect(&s.data, now)),
    };
    let (reader_facts, reader) = observe_reader(cluster, settings).await?;
    let remote_secrets = if namespace_exists {
        observe_remote_secrets(cluster, settings, with_data).await?
    } else {
        BTreeMap::new()
    };
    let claims =
        super::claims::observe_claims(cluster, cacerts.iter().chain(remote_secrets.values()))
            .await?;
    let legacy_reader_token = if namespace_exists {
        is_legacy_token(
            cluster
                .get_secret(&settings.istio_namespace, &legacy_token_secret_name())
                .await?
                .as_ref(),
        )
    } else {
        false
    };
    let remote_facts = remote_secrets
        .iter()
        .map(|(peer, s)| (peer.clone(), remote_secret_facts(s)))
        .collect();
    let facts = ClusterFacts {
        namespace_exists,
        cacerts: cacerts_facts,
        api: api_facts(cluster),
        reader: reader_facts,
        remote_secrets: remote_facts,
        desired_config_hash: desired_config_hash(cluster, settings),
        claims,
        legacy_reader_token,
        unmanaged_roots: match &cacerts {
            Some(s) if !is_managed(&s.labels) => inspect(&s.data, now).trusted_roots,
            _ => Vec::new(),
        },
    };
    Ok(ClusterFound {
        name: settings.name.clone(),
        facts,
        cacerts,
        reader,
        remote_secrets,
    })
}

/// istioctl's token Secret for the reader ServiceAccount, as the API server keeps it (not one of meshtrust's).
pub(crate) fn is_legacy_token(secret: Option<&SecretObject>) -> bool {
    secret.is_some_and(|s| {
        s.type_.as_deref() == Some("kubernetes.io/service-account-token")
            && s.annotations
                .get("kubernetes.io/service-account.name")
                .map(String::as_str)
                == Some(READER_SERVICE_ACCOUNT)
            && !is_managed(&s.labels)
    })
}

fn state(found: &Option<KubeObject>, wanted: &KubeObject) -> ObjectState {
    match found {
        None => ObjectState::Absent,
        Some(o) if !is_managed(&o.labels) => ObjectState::Unmanaged,
        Some(o) => ObjectState::Managed {
            up_to_date: is_up_to_date(o, wanted),
        },
    }
}

/// The reader identity's three objects, as found, and how they compare with what meshtrust wants.
async fn observe_reader(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
) -> Result<(ReaderFacts, ReaderObjects), EngineError> {
    let ns = settings.istio_namespace.as_str();
    let role_name = reader_cluster_role_name(ns);
    let found = ReaderObjects {
        service_account: cluster
            .get_object(ObjectKind::ServiceAccount, Some(ns), READER_SERVICE_ACCOUNT)
            .await?,
        cluster_role: cluster
            .get_object(ObjectKind::ClusterRole, None, &role_name)
            .await?,
        binding: cluster
            .get_object(ObjectKind::ClusterRoleBinding, None, &role_name)
            .await?,
    };
    let [sa, role, binding] = desired_reader(settings);
    let facts = ReaderFacts {
        service_account: state(&found.service_account, &sa),
        cluster_role: state(&found.cluster_role, &role),
        binding: state(&found.binding, &binding),
    };
    Ok((facts, found))
}

/// Remote secrets in the Istio namespace, by peer.
async fn observe_remote_secrets(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
    with_data: bool,
) -> Result<BTreeMap<String, SecretObject>, EngineError> {
    let namespace = &settings.istio_namespace;
    let selector = format!("{MULTICLUSTER_LABEL}=true");
    let secrets = if with_data {
        cluster.list_secrets(namespace, &selector).await?
    } else {
        cluster.list_secret_metadata(namespace, &selector).await?
    };
    Ok(secrets
        .into_iter()
        .filter_map(|s| {
            let peer = remote_secret_peer(&s.name)?.to_string();
            Some((peer, s))
        })
        .collect())
}

fn remote_secret_facts(secret: &SecretObject) -> RemoteSecretFacts {
    RemoteSecretFacts {
        managed: is_managed(&secret.labels),
        kv_version: secret
            .annotations
            .get(KV_VERSION_ANNOTATION)
            .and_then(|v| v.parse().ok()),
    }
}

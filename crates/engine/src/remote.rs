//! Cross-cluster discovery in the engine: observing the change index, reader identities and synced remote
//! secrets; publishing a cluster's reader kubeconfig; syncing peers' kubeconfigs into a cluster.

use std::collections::BTreeMap;

use meshtrust_core::bao_plan::desired_host;
use meshtrust_core::facts::{ObjectState, PublishedFacts, ReaderFacts, RemoteSecretFacts};
use meshtrust_core::istio::{
    CLUSTER_ANNOTATION, MULTICLUSTER_LABEL, READER_SERVICE_ACCOUNT, reader_cluster_role_name,
    reader_kubeconfig, reader_rules, remote_secret_name,
};
use meshtrust_core::mesh::{ClusterSettings, Mesh};
use meshtrust_core::ports::{Cluster, ErrorKind, KubeObject, ObjectKind, OpenBao, SecretObject};
use meshtrust_core::secret::SecretBytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{EngineError, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

pub const KV_VERSION_ANNOTATION: &str = "meshtrust.dev/kv-version";
const INDEX_RETRIES: usize = 8;

/// Hash of what a cluster's published kubeconfig points at; a change means republish.
pub fn config_hash(server: &str, ca_pem: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(server.as_bytes());
    h.update(b"\n");
    h.update(ca_pem.unwrap_or_default().trim().as_bytes());
    hex::encode(h.finalize())
}

/// Reads the change index: one request, whatever the number of peers.
pub async fn read_index(
    bao: &dyn OpenBao,
    mesh: &Mesh,
) -> Result<(u64, BTreeMap<String, PublishedFacts>), EngineError> {
    let Some(entry) = bao
        .kv_get(&mesh.openbao.kv_mount, &mesh.remote_secrets.index_path)
        .await?
    else {
        return Ok((0, BTreeMap::new()));
    };
    let mut published = BTreeMap::new();
    for (cluster, value) in &entry.data {
        // An entry that does not parse is treated as unpublished, so its owner republishes it.
        if let Some(p) = value
            .expose_str()
            .and_then(|t| serde_json::from_str::<PublishedFacts>(t).ok())
        {
            published.insert(cluster.clone(), p);
        }
    }
    Ok((entry.version, published))
}

/// Changes one cluster's index entry with check-and-set, retrying when another cluster bumped it meanwhile.
async fn update_index(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    cluster: &str,
    entry: Option<&PublishedFacts>,
) -> Result<(), EngineError> {
    let kv = &mesh.openbao.kv_mount;
    let path = &mesh.remote_secrets.index_path;
    let mut attempt = 0;
    loop {
        let current = bao.kv_get(kv, path).await?;
        let (version, mut data) = current.map(|e| (e.version, e.data)).unwrap_or_default();
        match entry {
            Some(p) => {
                let text = serde_json::to_string(p)
                    .map_err(|e| EngineError::Inconsistent(e.to_string()))?;
                data.insert(cluster.to_string(), SecretBytes::new(text));
            }
            None => {
                data.remove(cluster);
            }
        }
        match bao.kv_put(kv, path, &data, version).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict && attempt < INDEX_RETRIES => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

fn managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

fn state(found: &Option<KubeObject>, up_to_date: impl Fn(&KubeObject) -> bool) -> ObjectState {
    match found {
        None => ObjectState::Absent,
        Some(o) if !managed(&o.labels) => ObjectState::Unmanaged,
        Some(o) => ObjectState::Managed {
            up_to_date: up_to_date(o),
        },
    }
}

fn desired_binding(settings: &ClusterSettings) -> Value {
    json!({
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader_cluster_role_name(&settings.istio_namespace)},
        "subjects": [{"kind": "ServiceAccount", "name": READER_SERVICE_ACCOUNT, "namespace": settings.istio_namespace}],
    })
}

/// The reader identity's three objects, as found.
pub async fn observe_reader(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
) -> Result<(ReaderFacts, [Option<KubeObject>; 3]), EngineError> {
    let ns = settings.istio_namespace.as_str();
    let role_name = reader_cluster_role_name(ns);
    let sa = cluster
        .get_object(ObjectKind::ServiceAccount, Some(ns), READER_SERVICE_ACCOUNT)
        .await?;
    let role = cluster
        .get_object(ObjectKind::ClusterRole, None, &role_name)
        .await?;
    let binding = cluster
        .get_object(ObjectKind::ClusterRoleBinding, None, &role_name)
        .await?;
    let rules = reader_rules();
    let want_binding = desired_binding(settings);
    let facts = ReaderFacts {
        service_account: state(&sa, |_| true),
        cluster_role: state(&role, |o| o.body.get("rules") == Some(&rules)),
        binding: state(&binding, |o| {
            o.body.get("roleRef") == want_binding.get("roleRef")
                && o.body.get("subjects") == want_binding.get("subjects")
        }),
    };
    Ok((facts, [sa, role, binding]))
}

/// Remote secrets in the Istio namespace, by peer.
pub async fn observe_remote_secrets(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
) -> Result<
    (
        BTreeMap<String, RemoteSecretFacts>,
        BTreeMap<String, SecretObject>,
    ),
    EngineError,
> {
    let secrets = cluster
        .list_secrets(
            &settings.istio_namespace,
            &format!("{MULTICLUSTER_LABEL}=true"),
        )
        .await?;
    let mut facts = BTreeMap::new();
    let mut objects = BTreeMap::new();
    for s in secrets {
        let Some(peer) = s
            .name
            .strip_prefix("istio-remote-secret-")
            .map(str::to_string)
        else {
            continue;
        };
        facts.insert(
            peer.clone(),
            RemoteSecretFacts {
                managed: managed(&s.labels),
                kv_version: s
                    .annotations
                    .get(KV_VERSION_ANNOTATION)
                    .and_then(|v| v.parse().ok()),
            },
        );
        objects.insert(peer, s);
    }
    Ok((facts, objects))
}

/// Creates what is missing of the reader identity and repairs what meshtrust owns; never touches Istio's own.
pub async fn ensure_reader(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
    found: &[Option<KubeObject>; 3],
) -> Result<String, EngineError> {
    let ns = &settings.istio_namespace;
    let role_name = reader_cluster_role_name(ns);
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        ("app".to_string(), "istio-reader".to_string()),
    ]);
    let wanted = [
        (
            ObjectKind::ServiceAccount,
            Some(ns.clone()),
            READER_SERVICE_ACCOUNT.to_string(),
            json!({}),
        ),
        (
            ObjectKind::ClusterRole,
            None,
            role_name.clone(),
            json!({ "rules": reader_rules() }),
        ),
        (
            ObjectKind::ClusterRoleBinding,
            None,
            role_name,
            desired_binding(settings),
        ),
    ];
    let mut done = Vec::new();
    for ((kind, namespace, name, body), existing) in wanted.into_iter().zip(found.iter()) {
        // Istio's own objects are used as they are; a managed ServiceAccount has nothing to update.
        let resource_version = match existing {
            Some(o) if !managed(&o.labels) || kind == ObjectKind::ServiceAccount => continue,
            Some(o) => o.resource_version.clone(),
            None => None,
        };
        let object = KubeObject {
            namespace,
            name: name.clone(),
            labels: labels.clone(),
            resource_version,
            body,
        };
        cluster.put_object(kind, &object).await?;
        done.push(format!("{kind:?} {name}"));
    }
    Ok(format!("wrote {}", done.join(", ")))
}

/// Mints a bound reader token, builds the kubeconfig peers will use, publishes it with check-and-set and bumps
/// the index. Returns the kubeconfig and its KV version.
pub async fn publish(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
) -> Result<(SecretBytes, u64, i64), EngineError> {
    let ns = &settings.istio_namespace;
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
    let (token, expires) = cluster
        .request_token(ns, READER_SERVICE_ACCOUNT, ttl)
        .await?;
    let token = token
        .expose_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "cluster {}: TokenRequest returned an empty token",
                settings.name
            ))
        })?;
    // istiod does not retry a kubeconfig it cannot use, so only a complete one is ever published.
    let kubeconfig = SecretBytes::new(reader_kubeconfig(&settings.name, &host, ca, token));
    let kv = &mesh.openbao.kv_mount;
    let path = format!("{}/{}", mesh.remote_secrets.kv_path, settings.name);
    let current = bao.kv_get(kv, &path).await?.map(|e| e.version).unwrap_or(0);
    let data = BTreeMap::from([
        (settings.name.clone(), kubeconfig.clone()),
        ("server".to_string(), SecretBytes::new(host.clone())),
        (
            "tokenExpires".to_string(),
            SecretBytes::new(expires.to_string()),
        ),
    ]);
    let version = bao.kv_put(kv, &path, &data, current).await?;
    let entry = PublishedFacts {
        version,
        token_expires: expires,
        config_hash: config_hash(&host, Some(ca)),
    };
    update_index(bao, mesh, &settings.name, Some(&entry)).await?;
    Ok((kubeconfig, version, expires))
}

/// Removes a departed cluster's KV entry and index entry.
pub async fn unpublish(bao: &dyn OpenBao, mesh: &Mesh, cluster: &str) -> Result<(), EngineError> {
    update_index(bao, mesh, cluster, None).await?;
    bao.kv_delete(
        &mesh.openbao.kv_mount,
        &format!("{}/{cluster}", mesh.remote_secrets.kv_path),
    )
    .await?;
    Ok(())
}

/// Reads a peer's published kubeconfig and its version.
pub async fn fetch(
    bao: &dyn OpenBao,
    mesh: &Mesh,
    peer: &str,
) -> Result<(SecretBytes, u64), EngineError> {
    let path = format!("{}/{peer}", mesh.remote_secrets.kv_path);
    let entry = bao
        .kv_get(&mesh.openbao.kv_mount, &path)
        .await?
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "{peer} is in the index but {}/{path} is gone; run apply again",
                mesh.openbao.kv_mount
            ))
        })?;
    let kubeconfig = entry.data.get(peer).cloned().ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "{}/{path} has no field {peer:?} holding the kubeconfig",
            mesh.openbao.kv_mount
        ))
    })?;
    Ok((kubeconfig, entry.version))
}

/// The Secret istiod reads for `peer`: istioctl's name, label, annotation and data key, plus meshtrust's marks.
pub fn remote_secret(
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
    secret.data = BTreeMap::from([(peer.to_string(), kubeconfig)]);
    secret.type_ = None;
    secret
}

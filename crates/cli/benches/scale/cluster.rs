//! The real cluster's side: its remote secrets as the agent (or ESO) leaves them, and waiting for them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

pub async fn ensure_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// How many `istio/multiCluster=true` Secrets `namespace` holds.
pub async fn remote_secret_count(client: &kube::Client, namespace: &str) -> usize {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default().labels("istio/multiCluster=true"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// Deletes every remote secret in `namespace` (one request), so that an agent starts from nothing.
pub async fn delete_remote_secrets(client: &kube::Client, namespace: &str) -> Result<(), String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("istio/multiCluster=true"),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("deleting the remote secrets: {e}"))
}

/// Waits until `namespace` holds `count` remote secrets; the time it took, or None past `limit`.
pub async fn wait_for_count(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if remote_secret_count(client, namespace).await >= count {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until `istio-remote-secret-<peer>` holds `kubeconfig` under key `<peer>`; None past `limit`.
pub async fn wait_for_content(
    client: &kube::Client,
    namespace: &str,
    peer: &str,
    kubeconfig: &str,
    limit: Duration,
) -> Option<Duration> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let name = format!("istio-remote-secret-{peer}");
    let start = Instant::now();
    while start.elapsed() < limit {
        let current = api.get_opt(&name).await.ok().flatten();
        let value = current
            .and_then(|s| s.data)
            .and_then(|d| d.get(peer).cloned());
        if value.is_some_and(|v| v.0 == kubeconfig.as_bytes()) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

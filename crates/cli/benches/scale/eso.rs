//! External Secrets Operator, side by side: built from its Go module by scripts/build-eso on first use, run out
//! of cluster against the same API server and the same OpenBao (through the counting proxy), with one
//! ExternalSecret per peer syncing `<kv>/istio/remote-secrets/<peer>` into `istio-remote-secret-<peer>`.

use std::path::Path;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use meshtrust_testenv::TestEnv;

use crate::cluster;

pub const NAMESPACE: &str = "eso-bench";

// Building, installing and starting ESO is shared with the migration test.
#[path = "../../tests/support/eso.rs"]
mod process;
use process::resource;
pub use process::{install_crds, locate};

async fn apply(
    client: &kube::Client,
    ar: &ApiResource,
    value: serde_json::Value,
) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, ar)
        .patch(
            &name,
            &PatchParams::apply("meshtrust-scale-bench").force(),
            &Patch::Apply(&obj),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("applying {} {name}: {e}", ar.kind))
}

/// The token Secret and a SecretStore: Vault provider, KV v2 at `secret`, token auth, server = `bao_addr`.
pub async fn secret_store(
    client: &kube::Client,
    bao_addr: &str,
    token: &str,
) -> Result<(), String> {
    cluster::ensure_namespace(client, NAMESPACE).await;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bao-token", "namespace": NAMESPACE},
        "stringData": {"token": token}
    });
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret).map_err(|e| e.to_string())?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NAMESPACE)
        .patch(
            "bao-token",
            &PatchParams::apply("meshtrust-scale-bench").force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| e.to_string())?;
    let store = serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "openbao", "namespace": NAMESPACE},
        "spec": {"provider": {"vault": {
            "server": bao_addr, "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token"}}
        }}}
    });
    apply(client, &resource("SecretStore", "secretstores"), store).await
}

/// One ExternalSecret per peer, refreshed every `refresh` (ESO's duration syntax), shaped like istioctl's Secret.
pub async fn external_secrets(
    client: &kube::Client,
    peers: usize,
    refresh: &str,
) -> Result<(), String> {
    let ar = resource("ExternalSecret", "externalsecrets");
    for i in 0..peers {
        let peer = crate::peers::name(i);
        let es = serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": peer, "namespace": NAMESPACE},
            "spec": {
                "refreshInterval": refresh,
                "secretStoreRef": {"name": "openbao", "kind": "SecretStore"},
                "target": {"name": format!("istio-remote-secret-{peer}"), "template": {
                    "metadata": {
                        "labels": {"istio/multiCluster": "true"},
                        "annotations": {"networking.istio.io/cluster": peer}
                    }
                }},
                "data": [{"secretKey": peer, "remoteRef": {"key": format!("istio/remote-secrets/{peer}"), "property": peer}}]
            }
        });
        apply(client, &ar, es).await?;
    }
    Ok(())
}

/// Starts ESO's controller out of cluster against the first cluster: leader election off, metrics on loopback,
/// default concurrency and controller class.
pub fn start(env: &TestEnv, bin: &Path) -> process::EsoProcess {
    process::start(bin, &env.clusters[0].kubeconfig, &env.dir().join("eso.log"))
}

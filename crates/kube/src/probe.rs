//! Checks a peer kubeconfig the way istiod uses it: can it list what istiod watches?

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Lists services, endpointslices and pods (one item each) with `kubeconfig`. The error says which failed
/// and why, never the token.
pub async fn probe_reader_kubeconfig(kubeconfig: &str) -> Result<(), String> {
    let kc = Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| format!("the kubeconfig does not parse: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("the kubeconfig is not usable: {e}"))?;
    let server = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    let params = ListParams::default().limit(1);
    let describe = |what: &str, e: kube::Error| match e {
        kube::Error::Api(s) => format!(
            "listing {what} at {server} was refused: {} ({})",
            s.message, s.code
        ),
        other => format!(
            "cannot reach {server} to list {what}: {}",
            crate::describe::transport(&other)
        ),
    };
    Api::<Service>::all(client.clone())
        .list(&params)
        .await
        .map_err(|e| describe("services", e))?;
    Api::<EndpointSlice>::all(client.clone())
        .list(&params)
        .await
        .map_err(|e| describe("endpointslices", e))?;
    Api::<Pod>::all(client)
        .list(&params)
        .await
        .map_err(|e| describe("pods", e))?;
    Ok(())
}

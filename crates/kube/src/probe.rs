//! Checks a peer kubeconfig the way istiod uses it: can it list what istiod watches?

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses a peer's reader kubeconfig and refuses what a bearer-token kubeconfig never needs: exec plugins and
/// auth providers (they would run a command or reach elsewhere on this machine) and local file paths (they
/// would read this machine's files). It came from a peer, so it is untrusted input.
pub fn parse_reader_kubeconfig(kubeconfig: &str) -> Result<Kubeconfig, String> {
    let kc = Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| format!("the kubeconfig does not parse: {e}"))?;
    for user in &kc.auth_infos {
        let Some(auth) = &user.auth_info else {
            continue;
        };
        let refused = [
            (auth.exec.is_some(), "an exec plugin"),
            (auth.auth_provider.is_some(), "an auth provider"),
            (auth.token_file.is_some(), "a tokenFile path"),
            (
                auth.client_certificate.is_some(),
                "a client-certificate path",
            ),
            (auth.client_key.is_some(), "a client-key path"),
        ];
        if let Some((_, what)) = refused.iter().find(|(hit, _)| *hit) {
            return Err(format!(
                "user {:?} uses {what}, which a reader kubeconfig never needs; refusing to use it",
                user.name
            ));
        }
    }
    for cluster in &kc.clusters {
        let Some(c) = &cluster.cluster else { continue };
        if c.certificate_authority.is_some() || c.proxy_url.is_some() {
            return Err(format!(
                "cluster {:?} names a local CA file or a proxy, which a reader kubeconfig never needs; refusing to use it",
                cluster.name
            ));
        }
    }
    Ok(kc)
}

/// Lists services, endpointslices and pods (one item each) with `kubeconfig`. The error says which failed
/// and why, never the token.
pub async fn probe_reader_kubeconfig(kubeconfig: &str) -> Result<(), String> {
    let kc = parse_reader_kubeconfig(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("the kubeconfig is not usable: {e}"))?;
    // A peer's kubeconfig came through shared data: a hung server it names must not hang `verify`.
    config.connect_timeout = Some(PROBE_TIMEOUT);
    config.read_timeout = Some(PROBE_TIMEOUT);
    config.write_timeout = Some(PROBE_TIMEOUT);
    config.reset_reader_on_write = true;
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

//! Helpers shared by the tests that run real istiods: the workload identity they certify, and an independent
//! `openssl verify` of what they issue.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use meshtrust_testenv::TestCluster;
use serde_json::json;

/// The namespace of the workload identity the tests ask istiod to certify.
pub const WORKLOADS: &str = "workloads";

pub async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// A namespace with a ServiceAccount `app` in it: the workload identity the tests ask istiod to certify.
pub async fn workload_identity(cluster: &TestCluster) {
    let client = cluster.client().await.expect("client");
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": WORKLOADS}}),
    )
    .await;
    create(
        &Api::<ServiceAccount>::namespaced(client, WORKLOADS),
        json!({"metadata": {"name": "app"}}),
    )
    .await;
}

pub fn pem_certs(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(|c| format!("{}\n", c.trim()))
        .collect()
}

/// `openssl verify` of a workload chain's leaf against `roots` only (the rest of the chain is untrusted):
/// an independent check of what a peer's proxy does with its `istio-ca-root-cert`.
pub fn openssl_verifies(chain: &[String], roots: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tmp");
    let certs: Vec<String> = chain.iter().flat_map(|c| pem_certs(c)).collect();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let leaf = write("leaf.pem", &certs[0]);
    let untrusted = write("untrusted.pem", &certs[1..].concat());
    let roots = write("roots.pem", roots);
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&roots)
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .expect("openssl");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

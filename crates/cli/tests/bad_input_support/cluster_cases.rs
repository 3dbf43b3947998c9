//! Cases against a real API server and OpenBao: kubeconfigs that parse but fail at use (an exec plugin that
//! does not exist, a server that hangs, a server that answers HTML), and cacerts PEMs that `verify` must flag.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use rcgen::{CertificateParams, IsCa, KeyPair};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A kubeconfig for `server` with `user` as the user's YAML body.
pub fn kubeconfig(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: {server}\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: a\ncurrent-context: a\nusers:\n- name: a\n  user:\n{user}"
    )
}

pub const EXEC_USER: &str = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /nonexistent/credential-plugin\n      interactiveMode: Never\n";
pub const TOKEN_USER: &str = "    token: kube-secret-token-55e1\n";

/// A loopback server that accepts and never answers (`hang`), or answers every request with an HTML 200.
pub async fn fake_api_server(hang: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                if hang {
                    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                } else {
                    let body = "<html>proxy login</html>";
                    let _ = stream
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
                        .await;
                }
            });
        }
    });
    address
}

fn pem_of(params: CertificateParams, key: &KeyPair) -> String {
    params.self_signed(key).expect("self-sign").pem()
}

/// A leaf (not a CA) certificate and an expired CA certificate, both self-signed.
fn odd_certs() -> (String, String, String) {
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["leaf.example".into()]).expect("params");
    leaf.is_ca = IsCa::NoCa;
    let mut expired = CertificateParams::new(Vec::<String>::new()).expect("params");
    expired.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    expired.not_before = rcgen::date_time_ymd(2001, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let other_key = KeyPair::generate().expect("key").serialize_pem();
    (pem_of(leaf, &key), pem_of(expired, &key), other_key)
}

/// The cacerts corruptions: (case name, key in the Secret, new value).
pub fn pem_corruptions(
    original: &BTreeMap<String, ByteString>,
) -> Vec<(&'static str, &'static str, String)> {
    let ca_cert = String::from_utf8_lossy(
        &original
            .get("ca-cert.pem")
            .map(|b| b.0.clone())
            .unwrap_or_default(),
    )
    .to_string();
    let (leaf, expired, other_key) = odd_certs();
    vec![
        (
            "PEM: ca-cert.pem garbage",
            "ca-cert.pem",
            "this is not a certificate\n".into(),
        ),
        (
            "PEM: ca-cert.pem truncated",
            "ca-cert.pem",
            ca_cert[..ca_cert.len() / 2].to_string(),
        ),
        (
            "PEM: ca-cert.pem bad base64",
            "ca-cert.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into(),
        ),
        ("PEM: key does not match cert", "ca-key.pem", other_key),
        (
            "PEM: ca-key.pem garbage",
            "ca-key.pem",
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".into(),
        ),
        ("PEM: ca-cert.pem not a CA", "ca-cert.pem", leaf),
        ("PEM: ca-cert.pem expired", "ca-cert.pem", expired),
        (
            "PEM: root-cert.pem garbage",
            "root-cert.pem",
            "garbage".into(),
        ),
        ("PEM: cert-chain.pem empty", "cert-chain.pem", String::new()),
    ]
}

pub async fn set_field(client: &kube::Client, data: BTreeMap<String, ByteString>) {
    let api = Api::<Secret>::namespaced(client.clone(), "istio-system");
    let mut secret = api.get("cacerts").await.expect("cacerts");
    secret.data = Some(data);
    api.replace("cacerts", &PostParams::default(), &secret)
        .await
        .expect("replace cacerts");
}

/// Every Secret's name and resourceVersion in `istio-system`: a write changes it.
pub async fn secret_versions(client: &kube::Client) -> Vec<(String, String)> {
    let api = Api::<Secret>::namespaced(client.clone(), "istio-system");
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

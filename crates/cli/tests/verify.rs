//! `verify` and `status` against the real servers: a consistent mesh passes, and each kind of damage is named
//! exactly, then repaired by `apply`.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use support::Mesh;

fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs verify, requires it to fail, and returns its findings as text.
fn failing(mesh: &Mesh) -> String {
    let out = mesh.meshtrust(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "verify must fail:\n{stdout}");
    stdout
}

async fn patch_cacerts(mesh: &Mesh, cluster: usize, key: &str, value: String) {
    let client = mesh.env.clusters[cluster].client().await.expect("client");
    let api: Api<Secret> = Api::namespaced(client, "istio-system");
    let mut secret = api.get("cacerts").await.expect("cacerts");
    let data: &mut BTreeMap<String, ByteString> = secret.data.as_mut().expect("data");
    data.insert(key.to_string(), ByteString(value.into_bytes()));
    api.replace("cacerts", &PostParams::default(), &secret)
        .await
        .expect("replace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_each_kind_of_damage_and_apply_repairs_it() {
    let mesh = Mesh::start(2, "");
    mesh.ok(&["apply"]);
    let ok = mesh.ok(&["verify"]);
    assert!(ok.contains("OK:"), "{ok}");
    let status = mesh.ok(&["status"]);
    assert!(
        status.contains("cluster-a")
            && status.contains("1/1")
            && status.contains("meshtrust-root-1"),
        "{status}"
    );
    let json = mesh.json(&["verify"]);
    assert_eq!(json["ok"], true);

    let dir = tempfile::tempdir().expect("tmp");
    let foreign = dir.path().join("foreign.pem");
    let key = dir.path().join("k.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=foreign root",
        "-days",
        "1",
        "-keyout",
        key.to_str().expect("p"),
        "-out",
        foreign.to_str().expect("p"),
    ]);

    // 1. A different root in one cluster.
    patch_cacerts(
        &mesh,
        1,
        "root-cert.pem",
        std::fs::read_to_string(&foreign).expect("pem"),
    )
    .await;
    let out = failing(&mesh);
    assert!(
        out.contains("FAIL cluster-b Secret istio-system/cacerts") && out.contains("does not know"),
        "{out}"
    );
    mesh.ok(&["apply"]);
    assert!(mesh.ok(&["verify"]).contains("OK:"));

    // 2. A key that does not match its certificate.
    let other_key = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ]);
    patch_cacerts(&mesh, 0, "ca-key.pem", other_key).await;
    let out = failing(&mesh);
    assert!(
        out.contains(
            "FAIL cluster-a Secret istio-system/cacerts: ca-key.pem does not match ca-cert.pem"
        ),
        "{out}"
    );
    assert!(
        !out.contains("PRIVATE KEY"),
        "no key material in the output"
    );
    mesh.ok(&["apply"]);
    assert!(mesh.ok(&["verify"]).contains("OK:"));

    // 3. A deleted remote secret.
    let a = mesh.env.clusters[0].client().await.expect("client");
    Api::<Secret>::namespaced(a, "istio-system")
        .delete("istio-remote-secret-cluster-b", &DeleteParams::default())
        .await
        .expect("delete");
    let out = failing(&mesh);
    assert!(
        out.contains(
            "FAIL cluster-a Secret istio-system/istio-remote-secret-cluster-b: is missing"
        ),
        "{out}"
    );
    mesh.ok(&["apply"]);
    assert!(mesh.ok(&["verify"]).contains("OK:"));

    // 4. A revoked token: cluster-b's reader ServiceAccount is deleted, so the published kubeconfig stops working.
    let b = mesh.env.clusters[1].client().await.expect("client");
    Api::<ServiceAccount>::namespaced(b, "istio-system")
        .delete("istio-reader-service-account", &DeleteParams::default())
        .await
        .expect("delete sa");
    // The API server caches successful token authentications for 10 s.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let out = failing(&mesh);
    assert!(out.contains("FAIL cluster-a Secret istio-system/istio-remote-secret-cluster-b: its kubeconfig cannot read cluster-b"), "{out}");
    assert!(out.contains("401") || out.contains("Unauthorized"), "{out}");
    mesh.ok(&["apply"]);
    let ok = mesh.ok(&["verify"]);
    assert!(
        ok.contains("OK:"),
        "a new ServiceAccount means a new token, published and synced: {ok}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_on_an_expired_intermediate() {
    let mesh = Mesh::start(
        1,
        "ca:\n  intermediate:\n    ttl: 5s\n    renewBefore: 1s\n",
    );
    mesh.ok(&["apply"]);
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let out = failing(&mesh);
    assert!(
        out.contains("FAIL cluster-a Secret istio-system/cacerts: the CA certificate (serial"),
        "{out}"
    );
    assert!(out.contains("expired"), "{out}");
    let json: serde_json::Value =
        serde_json::from_slice(&mesh.meshtrust(&["verify", "--output", "json"]).stdout)
            .expect("json");
    assert_eq!(json["ok"], false);
    assert!(
        json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["fix"].as_str().is_some_and(|x| x.contains("renew")))
    );
}

#[test]
fn completions_are_generated() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotate-root"));
}

//! The trust capability against the real OpenBao and real API servers: root CA in OpenBao, per-cluster
//! intermediates in Istio's cacerts format, idempotence, renewal, rotation, adoption and shared-root mode.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::{Mesh, field, openssl_pubkey, openssl_verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_builds_verifiable_cacerts_and_a_second_apply_writes_nothing() {
    let mesh = Mesh::start(2, "");
    let plan = mesh.json(&["plan"]);
    assert_eq!(
        plan["changes"].as_array().expect("changes").len(),
        21,
        "11 for OpenBao, 4 for trust in the clusters, 6 for remote secrets: {plan}"
    );
    // plan writes nothing
    assert!(mesh.secret(0, "istio-system", "cacerts").await.is_none());

    mesh.ok(&["apply"]);
    let a = mesh.cacerts(0).await;
    let b = mesh.cacerts(1).await;
    for s in [&a, &b] {
        assert!(openssl_verify(s).contains("OK"));
        assert_eq!(
            openssl_pubkey(&field(s, "ca-key.pem"), false),
            openssl_pubkey(&field(s, "ca-cert.pem"), true)
        );
        assert_eq!(
            s.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/managed-by"],
            "meshtrust"
        );
        assert!(s.type_.is_none() || s.type_.as_deref() == Some("Opaque"));
        let chain = field(s, "cert-chain.pem");
        assert!(
            chain.starts_with(field(s, "ca-cert.pem").trim_end()),
            "intermediate first in cert-chain.pem"
        );
        for key in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            assert!(field(s, key).ends_with('\n'), "{key} ends with a newline");
        }
    }
    assert_eq!(
        field(&a, "root-cert.pem"),
        field(&b, "root-cert.pem"),
        "root-cert.pem is byte-identical"
    );
    assert!(mesh.ok(&["verify"]).contains("OK"));

    // The root key is internal to OpenBao: one key, and no API answer carries private material.
    let keys = mesh.bao(&["list", "-format=json", "pki/keys"]);
    let keys: Vec<String> = serde_json::from_str(&keys).expect("keys");
    assert_eq!(keys.len(), 1);
    let key = mesh.bao(&["read", "-format=json", &format!("pki/key/{}", keys[0])]);
    assert!(!key.contains("private_key"), "{key}");
    assert!(key.contains("\"key_type\": \"rsa\""), "{key}");
    let issuer = mesh.bao(&["read", "-format=json", "pki/issuer/meshtrust-root-1"]);
    assert!(!issuer.contains("PRIVATE KEY"));

    // Idempotence: the second plan is empty and apply changes no resourceVersion.
    let before = (
        a.metadata.resource_version.clone(),
        b.metadata.resource_version.clone(),
    );
    let second = mesh.json(&["apply"]);
    assert_eq!(second["applied"], json!([]), "{second}");
    assert_eq!(second["plan"]["changes"], json!([]));
    let after = (
        mesh.cacerts(0).await.metadata.resource_version,
        mesh.cacerts(1).await.metadata.resource_version,
    );
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reissues_under_the_same_root() {
    // renewBefore 118s of a 120s lifetime: due two seconds after issue.
    let mesh = Mesh::start(
        1,
        "ca:\n  intermediate:\n    ttl: 120s\n    renewBefore: 118s\n",
    );
    mesh.ok(&["apply"]);
    let first = mesh.cacerts(0).await;
    assert!(
        mesh.json(&["plan"])["changes"]
            .as_array()
            .expect("changes")
            .is_empty()
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let plan = mesh.json(&["plan"]);
    let reason = plan["changes"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_string();
    assert!(reason.contains("within renewBefore"), "{reason}");
    mesh.ok(&["apply"]);
    let second = mesh.cacerts(0).await;
    assert_ne!(
        field(&first, "ca-cert.pem"),
        field(&second, "ca-cert.pem"),
        "a new intermediate"
    );
    assert_ne!(
        field(&first, "ca-key.pem"),
        field(&second, "ca-key.pem"),
        "with a new key"
    );
    assert_eq!(
        field(&first, "root-cert.pem"),
        field(&second, "root-cert.pem"),
        "under the same root"
    );
    openssl_verify(&second);
}

/// A root with 30 days left and renewBefore 60 days: Vault cuts the intermediate to the root's end, OpenBao
/// lets it outlive the root; on either store a second apply writes nothing, and plan, status and verify warn
/// with the root's end date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_near_its_end_is_a_dated_warning_not_a_reissue_loop() {
    let mesh = Mesh::start(1, "ca:\n  intermediate:\n    renewBefore: 1440h\n");
    // The root, made before meshtrust runs, as one from an earlier year would be.
    mesh.bao(&["secrets", "enable", "-max-lease-ttl=87600h", "pki"]);
    let root = mesh.bao(&[
        "write",
        "-format=json",
        "pki/root/generate/internal",
        "common_name=meshtrust root CA",
        "issuer_name=meshtrust-root-1",
        "key_type=ec",
        "ttl=720h",
    ]);
    let root: serde_json::Value = serde_json::from_str(&root).expect("root JSON");
    let end = root["data"]["expiration"].as_i64().expect("expiration");
    let date = meshtrust_core::duration::rfc3339(end);

    let first = mesh.ok(&["apply"]);
    assert!(first.contains(&date), "{first}");
    let plan = mesh.json(&["plan"]);
    assert!(
        plan["changes"].as_array().expect("changes").is_empty(),
        "the second run writes nothing: {plan}"
    );
    let warned = |v: &serde_json::Value| {
        v["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains(&date)))
        })
    };
    assert!(warned(&plan), "{plan}");
    let second = mesh.ok(&["apply"]);
    assert!(second.contains("No changes"), "{second}");
    let verify = mesh.json(&["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(warned(&verify), "{verify}");
    assert!(warned(&mesh.json(&["status"])));
    assert!(mesh.ok(&["status"]).contains(&date));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_keeps_overlapping_trust_through_three_phases() {
    let mesh = Mesh::start(2, "");
    mesh.ok(&["apply"]);
    let old_root = field(&mesh.cacerts(0).await, "root-cert.pem");
    let old_int = field(&mesh.cacerts(0).await, "ca-cert.pem");

    // Phase 1: both roots trusted, same intermediates.
    let out = mesh.ok(&["ca", "rotate-root", "--step"]);
    assert!(out.contains("phase 1"), "{out}");
    for i in 0..2 {
        let s = mesh.cacerts(i).await;
        let roots = field(&s, "root-cert.pem");
        assert_eq!(roots.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(
            roots.starts_with(&old_root),
            "old root bytes kept first (istiod < 1.31 compares bytes)"
        );
        openssl_verify(&s);
    }
    assert_eq!(field(&mesh.cacerts(0).await, "ca-cert.pem"), old_int);
    assert!(
        mesh.ok(&["verify"]).contains("OK"),
        "phase 1 leaves a consistent mesh"
    );

    // Phase 2: new intermediates from the new root, both roots still trusted.
    let out = mesh.ok(&["ca", "rotate-root", "--step"]);
    assert!(out.contains("phase 2"), "{out}");
    let s = mesh.cacerts(0).await;
    assert_ne!(field(&s, "ca-cert.pem"), old_int);
    assert_eq!(
        field(&s, "root-cert.pem")
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    openssl_verify(&s);

    // The default keeps the old root for ca.rootRotation.phaseDwell (24h): exit status 3, not complete.
    let waits = mesh.meshtrust(&["ca", "rotate-root"]);
    let text = String::from_utf8_lossy(&waits.stdout);
    assert_eq!(waits.status.code(), Some(3), "{text}");
    assert!(
        text.contains("the dwell") && !text.contains("Rotation complete"),
        "{text}"
    );

    // Phase 3 at once, only when asked: old root dropped everywhere, with a warning.
    let skip = mesh.meshtrust(&["ca", "rotate-root", "--skip-dwell"]);
    let out = String::from_utf8_lossy(&skip.stdout).to_string();
    assert!(skip.status.success(), "{out}");
    assert!(
        String::from_utf8_lossy(&skip.stderr).contains("--skip-dwell drops the old root"),
        "the shortcut warns"
    );
    assert!(out.contains("phase 3"), "{out}");
    assert!(out.contains("Rotation complete"), "{out}");
    let a = mesh.cacerts(0).await;
    let b = mesh.cacerts(1).await;
    assert_eq!(
        field(&a, "root-cert.pem")
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    assert_ne!(field(&a, "root-cert.pem"), old_root);
    assert_eq!(field(&a, "root-cert.pem"), field(&b, "root-cert.pem"));
    openssl_verify(&a);
    openssl_verify(&b);
    assert!(mesh.ok(&["verify"]).contains("OK"));
    assert!(
        mesh.json(&["plan"])["changes"]
            .as_array()
            .expect("changes")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_cacerts_is_never_overwritten_without_adopt() {
    let mesh = Mesh::start(1, "");
    let client = mesh.env.clusters[0].client().await.expect("client");
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "istio-system"}})).expect("ns");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("ns");
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "stringData": {"ca-cert.pem": "someone else's"}
    }))
    .expect("secret");
    let secrets: Api<Secret> = Api::namespaced(client, "istio-system");
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create");

    let out = mesh.meshtrust(&["apply"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not managed by meshtrust") && stderr.contains("--adopt"),
        "{stderr}"
    );
    let untouched = mesh.cacerts(0).await;
    assert_eq!(field(&untouched, "ca-cert.pem"), "someone else's");

    mesh.ok(&["apply", "--adopt"]);
    let adopted = mesh.cacerts(0).await;
    openssl_verify(&adopted);
    assert!(mesh.ok(&["verify"]).contains("OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_root_mode_reproduces_seed_001_with_a_warning() {
    let mesh = Mesh::start(2, "ca:\n  mode: shared-root\n");
    let out = mesh.meshtrust(&["apply"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("WARNING") && stdout.contains("ROOT KEY"),
        "{stdout}"
    );

    let kv: serde_json::Value =
        serde_json::from_str(&mesh.bao(&["kv", "get", "-format=json", "secret/istio/ca"]))
            .expect("kv");
    assert_eq!(kv["data"]["metadata"]["version"], 1);
    let stored = kv["data"]["data"].as_object().expect("fields");
    let fields: BTreeMap<_, _> = stored
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
        .collect();
    assert!(fields["key.pem"].contains("PRIVATE KEY"));
    let a = mesh.cacerts(0).await;
    let b = mesh.cacerts(1).await;
    assert_eq!(field(&a, "ca-cert.pem"), fields["root-cert.pem"]);
    assert_eq!(a.data, b.data, "every cluster holds the same bundle");
    let cert = openssl_x509_text(&field(&a, "ca-cert.pem"));
    assert!(
        cert.contains("Public-Key: (4096 bit)"),
        "RSA-4096 like seed 001"
    );
    assert!(mesh.ok(&["verify"]).contains("OK"));
    // Re-running does not regenerate: KV stays at version 1 and nothing is written.
    assert_eq!(mesh.json(&["apply"])["applied"], json!([]));
    let kv: serde_json::Value =
        serde_json::from_str(&mesh.bao(&["kv", "get", "-format=json", "secret/istio/ca"]))
            .expect("kv");
    assert_eq!(kv["data"]["metadata"]["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_layout_is_written_and_verified() {
    let mesh = Mesh::start(1, "ca:\n  secretFormat: tls\n");
    mesh.ok(&["apply"]);
    let s = mesh.cacerts(0).await;
    let keys: Vec<&String> = s.data.as_ref().expect("data").keys().collect();
    assert_eq!(keys, vec!["ca.crt", "tls.crt", "tls.key"]);
    assert_eq!(
        field(&s, "tls.crt").matches("BEGIN CERTIFICATE").count(),
        1,
        "tls.crt holds only the intermediate"
    );
    assert!(mesh.ok(&["verify"]).contains("OK"));
    // Switching layout re-issues into the other form.
    mesh.rewrite("");
    mesh.ok(&["apply"]);
    openssl_verify(&mesh.cacerts(0).await);
}

/// Two applies started together on an empty OpenBao must agree on one root, every time.
#[test]
fn concurrent_applies_on_an_empty_openbao_create_exactly_one_root() {
    let mut mesh = Mesh::start(2, "");
    let mut contested = 0;
    for round in 1..=20 {
        if round > 1 {
            mesh.env.bao.restart_empty().expect("fresh OpenBao");
            // A fresh mesh: the clusters forget the last round's root too (kept, it would be moved off
            // through the phases, as after a lost store).
            for cluster in &mesh.env.clusters {
                delete_cacerts(cluster);
            }
        }
        let spawn = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
                .args(["apply", "--output", "json", "--mesh"])
                .arg(&mesh.file)
                .env("BAO_ADDR", &mesh.env.bao.addr)
                .env("BAO_TOKEN", &mesh.env.bao.root_token)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn meshtrust")
        };
        let (first, second) = (spawn(), spawn());
        let mut generated = 0;
        for child in [first, second] {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let tried_root = report["applied"].as_array().is_some_and(|a| {
                a.iter().any(|c| {
                    c["resource"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("root CA issuer"))
                })
            });
            generated += usize::from(tried_root);
        }
        contested += usize::from(generated == 2);
        let issuers: Vec<String> =
            serde_json::from_str(&mesh.bao(&["list", "-format=json", "pki/issuers"]))
                .expect("issuers");
        assert_eq!(issuers.len(), 1, "round {round}: exactly one root issuer");
        let keys: Vec<String> =
            serde_json::from_str(&mesh.bao(&["list", "-format=json", "pki/keys"])).expect("keys");
        assert_eq!(keys.len(), 1, "round {round}: no orphaned key");
        assert!(mesh.ok(&["verify"]).contains("OK"), "round {round}");
    }
    eprintln!("{contested} of 20 rounds had both applies try to create the root");
    assert!(
        contested > 0,
        "the race was never exercised: both applies must try to create the root at least once"
    );
}

fn delete_cacerts(cluster: &meshtrust_testenv::TestCluster) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = cluster.client().await.expect("client");
        Api::<Secret>::namespaced(client, "istio-system")
            .delete("cacerts", &Default::default())
            .await
            .expect("delete cacerts");
    });
}

fn openssl_x509_text(pem: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.pem");
    std::fs::write(&path, pem).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The seed 001 bootstrap job's bundle, as PEM text (certificate, key).
fn seed_001_bundle(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = support::seed_001_root(dir);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pem");
    (read(&cert), read(&key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001s_cacerts_is_handed_over_from_eso_in_place_with_the_same_root() {
    let mesh = Mesh::start(1, "ca:\n  mode: shared-root\n");
    let (root, key) = seed_001_bundle(mesh.env.dir());
    let dir = mesh.env.dir();
    std::fs::write(dir.join("r.pem"), &root).expect("write");
    std::fs::write(dir.join("k.pem"), &key).expect("write");
    let at = |f: &str| format!("@{}", dir.join(f).display());
    mesh.bao(&[
        "kv",
        "put",
        "secret/istio/ca",
        &format!("root-cert.pem={}", at("r.pem")),
        &format!("cert-chain.pem={}", at("r.pem")),
        &format!("key.pem={}", at("k.pem")),
    ]);
    // What ESO's ExternalSecret istio-system/istio-cacerts leaves: the root as the signing CA, its marks and its
    // controller ownerReference.
    let client = mesh.env.clusters[0].client().await.expect("client");
    support::create_namespace(&client, "istio-system").await;
    support::create_objects(
        &client,
        &[support::crd(
            "external-secrets.io",
            "v1",
            "ExternalSecret",
            "externalsecrets",
        )],
        false,
    )
    .await;
    support::create_when_served(
        &client,
        &[
            json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "istio-cacerts", "namespace": "istio-system"},
            "spec": {"target": {"name": "cacerts"}}}),
        ],
    )
    .await;
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
        "externalsecrets",
    );
    let es: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), "istio-system", &resource);
    let uid = es
        .get("istio-cacerts")
        .await
        .expect("es")
        .metadata
        .uid
        .expect("uid");
    let synced: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cacerts",
            "labels": {"reconcile.external-secrets.io/managed": "true", "reconcile.external-secrets.io/created-by": "7c1d"},
            "annotations": {"reconcile.external-secrets.io/data-hash": "e3b0"},
            "ownerReferences": [{"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "name": "istio-cacerts", "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "stringData": {"ca-cert.pem": root, "ca-key.pem": key, "root-cert.pem": root, "cert-chain.pem": root}
    }))
    .expect("cacerts");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let before = secrets
        .create(&PostParams::default(), &synced)
        .await
        .expect("cacerts");

    let plan = mesh.ok(&["plan", "--adopt"]);
    assert!(
        plan.contains("is written by External Secrets Operator (ExternalSecret istio-system/istio-cacerts targets it)"),
        "{plan}"
    );
    assert!(!mesh.meshtrust(&["apply", "--adopt"]).status.success());
    let still = mesh.cacerts(0).await;
    assert_eq!(
        still.metadata.resource_version, before.metadata.resource_version,
        "nothing flaps"
    );

    // The hand-over the guide gives (no garbage collector here, so a plain delete stands for the orphaning one).
    es.delete("istio-cacerts", &Default::default())
        .await
        .expect("delete");
    mesh.ok(&["apply", "--adopt"]);
    let adopted = mesh.cacerts(0).await;
    assert_eq!(
        adopted.metadata.uid, before.metadata.uid,
        "taken over in place"
    );
    assert_eq!(
        field(&adopted, "root-cert.pem"),
        root,
        "the root every proxy trusts is kept"
    );
    assert_eq!(field(&adopted, "ca-cert.pem"), root);
    let labels = adopted.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meshtrust");
    assert!(
        !labels
            .keys()
            .any(|k| k.starts_with("reconcile.external-secrets.io")),
        "{labels:?}"
    );
    assert!(
        adopted
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert!(mesh.ok(&["verify"]).contains("OK"));
    assert_eq!(mesh.json(&["apply"])["applied"], json!([]), "settled");
}

/// `bao kv put secret/istio/ca` of a bundle from these PEM files.
fn put_bundle(mesh: &Mesh, cert: &std::path::Path, key: &std::path::Path) {
    let at = |p: &std::path::Path| format!("@{}", p.display());
    mesh.bao(&[
        "kv",
        "put",
        "secret/istio/ca",
        &format!("root-cert.pem={}", at(cert)),
        &format!("cert-chain.pem={}", at(cert)),
        &format!("key.pem={}", at(key)),
    ]);
}

/// A self-signed P-256 certificate and its key by `openssl`, with `extensions` (`-addext` values).
fn openssl_cert(
    dir: &std::path::Path,
    name: &str,
    extensions: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    support::openssl_self_signed(dir, name, &format!("/CN={name}"), "ec", 30, extensions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_to_import_that_is_missing_or_unusable_blocks_by_name_and_nothing_is_written() {
    let mesh = Mesh::start(1, "ca:\n  importRoot:\n    kvPath: istio/ca\n");
    let dir = mesh.env.dir();
    let (ca, ca_key) = openssl_cert(dir, "seed-root", &["basicConstraints=critical,CA:TRUE"]);
    let (_, other_key) = openssl_cert(dir, "other-root", &["basicConstraints=critical,CA:TRUE"]);
    let (leaf, leaf_key) = openssl_cert(dir, "not-a-ca", &["basicConstraints=critical,CA:FALSE"]);
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let key_lines: Vec<String> = [&ca_key, &other_key, &leaf_key]
        .iter()
        .map(|k| {
            std::fs::read_to_string(k)
                .expect("key")
                .lines()
                .nth(1)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let cases: [(Option<(&std::path::Path, &std::path::Path)>, &str); 4] = [
        (None, "ca.importRoot names it, but it does not exist"),
        (
            Some((&ca, &other_key)),
            "key.pem is not the private key of the certificate in root-cert.pem",
        ),
        (Some((&leaf, &leaf_key)), "is not a CA certificate"),
        (Some((&garbage, &ca_key)), "root-cert.pem: "),
    ];
    for (bundle, expected) in cases {
        if let Some((cert, key)) = bundle {
            put_bundle(&mesh, cert, key);
        }
        let plan = mesh.ok(&["plan", "--adopt"]);
        assert!(
            plan.contains("BLOCKED OpenBao KV secret/istio/ca:") && plan.contains(expected),
            "{expected}: {plan}"
        );
        let out = mesh.meshtrust(&["apply", "--adopt"]);
        assert!(!out.status.success(), "{expected}: refused");
        let text = format!(
            "{plan}{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        for line in &key_lines {
            assert!(!text.contains(line.as_str()), "no key material: {text}");
        }
        let issuers = mesh
            .env
            .bao
            .cli()
            .args(["list", "-format=json", "pki/issuers"])
            .output()
            .expect("bao");
        let listed = String::from_utf8_lossy(&issuers.stdout);
        assert!(
            !issuers.status.success() || listed.trim() == "[]" || listed.trim().is_empty(),
            "{expected}: no root made instead: {listed}"
        );
        assert!(
            mesh.secret(0, "istio-system", "cacerts").await.is_none(),
            "{expected}: no cacerts"
        );
    }
    // Fixed: imported as meshtrust-root-1, and the intermediate is signed under it, by a token holding only
    // the admin policy (reading the bundle, importing it and naming the issuer are in it).
    put_bundle(&mesh, &ca, &ca_key);
    let admin = dir.join("admin.hcl");
    std::fs::write(&admin, mesh.ok(&["bao", "policies", "--admin"])).expect("write");
    mesh.bao(&[
        "policy",
        "write",
        "meshtrust-admin",
        admin.to_str().expect("path"),
    ]);
    let token = mesh.bao(&[
        "token",
        "create",
        "-policy=meshtrust-admin",
        "-no-default-policy",
        "-field=token",
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrust"))
        .args(["apply", "--adopt", "--mesh"])
        .arg(&mesh.file)
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env("BAO_TOKEN", token.trim())
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .expect("meshtrust");
    assert!(
        out.status.success(),
        "apply with the admin policy alone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cacerts = mesh.cacerts(0).await;
    assert_eq!(
        openssl_pubkey(&field(&cacerts, "root-cert.pem"), true),
        openssl_pubkey(&std::fs::read_to_string(&ca).expect("root"), true)
    );
    openssl_verify(&cacerts);
    assert_eq!(mesh.json(&["apply"])["applied"], json!([]), "settled");
}

//! External Secrets Operator, side by side: built from its Go module by scripts/build-eso on first use, run out
//! of cluster against the same API server and the same OpenBao (through the counting proxy), with one
//! ExternalSecret per peer syncing `<kv>/istio/remote-secrets/<peer>` into `istio-remote-secret-<peer>`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use meshtrust_testenv::TestEnv;

use crate::agent::Guard;
use crate::cluster;

pub const NAMESPACE: &str = "eso-bench";

/// The ESO binary and its CRD directory, built on first use.
pub fn locate() -> Result<(PathBuf, PathBuf), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-eso");
    let path = |what: &str| -> Result<PathBuf, String> {
        let out = Command::new(&script)
            .arg(what)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let (bin, crds) = (path("print-path")?, path("print-crds")?);
    if !bin.exists() || !crds.exists() {
        eprintln!(
            "External Secrets Operator is not built yet: building it now with scripts/build-eso (5 min or more cold)"
        );
        let status = Command::new(&script)
            .arg("build")
            .status()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !status.success() {
            return Err(format!("{} failed ({status})", script.display()));
        }
    }
    Ok((bin, crds))
}

/// Server-side applies every CRD file in `dir` and waits until each is Established.
pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<usize, String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("meshtrust-scale-bench").force();
    let mut names = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for file in entries {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        // The directory also holds a kustomization.yaml.
        if !text.contains("kind: CustomResourceDefinition") {
            continue;
        }
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
            .map_err(|e| format!("{} is not a CRD: {e}", file.display()))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("installing CRD {name}: {e}"))?;
        names.push(name);
    }
    for name in &names {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let crd = api.get(name).await.map_err(|e| e.to_string())?;
            let ok = crd
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("CRD {name} was not Established within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(names.len())
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "external-secrets.io".into(),
        version: "v1".into(),
        api_version: "external-secrets.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

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

/// Starts ESO's controller out of cluster: leader election off, metrics and health on loopback, default
/// concurrency and controller class.
pub fn start(env: &TestEnv, bin: &Path) -> Guard {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(env.dir().join("eso.log")).expect("eso log");
    let child = Command::new(bin)
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .arg("--enable-leader-election=false")
        .arg("--loglevel=error")
        .env("KUBECONFIG", &env.clusters[0].kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start external-secrets");
    Guard(child)
}

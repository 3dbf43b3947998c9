//! External Secrets Operator as users run it: built from its Go module by scripts/build-eso on first use (about
//! 5 min cold, a no-op warm), its CRDs installed from the module, its controller run out of cluster against one
//! test API server. Shared by the migration test and the scale benchmark.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, Patch, PatchParams};
use meshtrust_testenv::dying_with_owner;

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
    let params = PatchParams::apply("meshtrust-tests").force();
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

/// An `external-secrets.io/v1` kind.
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "external-secrets.io".into(),
        version: "v1".into(),
        api_version: "external-secrets.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// A running ESO controller; dropping it stops it (and `setpriv --pdeathsig` stops it with the test).
pub struct EsoProcess(pub Child);

impl EsoProcess {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for EsoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts ESO's controller out of cluster against the API server of `kubeconfig`: leader election off, metrics
/// on a free loopback port, errors only, logging to `log`.
pub fn start(bin: &Path, kubeconfig: &Path, log: &Path) -> EsoProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(log).expect("eso log");
    let child = dying_with_owner(bin)
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .arg("--enable-leader-election=false")
        .arg("--loglevel=error")
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start external-secrets");
    EsoProcess(child)
}

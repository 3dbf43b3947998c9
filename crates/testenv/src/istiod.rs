//! A real istiod (`pilot-discovery discovery`) per cluster, run out of cluster against that cluster's API server
//! with the admin kubeconfig, every listener on a loopback port. Its working directory holds the mesh config
//! (`./etc/istio/config/mesh`) and the projected `cacerts` Secret (`./etc/cacerts`), the paths istiod reads in a pod.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::istio_ca;
use crate::process::ManagedProcess;
use crate::{IstioBinaries, TestCluster, TestEnvError, ports::free_port};

/// How to run one istiod.
#[derive(Debug, Clone)]
pub struct IstiodOptions {
    /// `ISTIO_MULTIROOT_MESH=true`: accept a new root bundle live (root rotation).
    pub multiroot: bool,
}

impl Default for IstiodOptions {
    fn default() -> Self {
        Self { multiroot: true }
    }
}

/// A running istiod. Dropping it kills the process and stops the `cacerts` projection.
pub struct Istiod {
    pub cluster: String,
    /// `127.0.0.1:<port>` of `--httpAddr` (`/ready`, `/debug/*`).
    pub http: String,
    /// `127.0.0.1:<port>` of `--secureGRPCAddr` (the CA and XDS over TLS).
    pub secure_grpc: String,
    /// The working directory (`./etc/cacerts`, `./etc/istio/config/mesh`).
    pub dir: PathBuf,
    pub log: PathBuf,
    process: ManagedProcess,
    projection: tokio::task::JoinHandle<()>,
}

impl Istiod {
    /// Installs Istio's CRDs into `cluster`, projects its `istio-system/cacerts` (which must exist) and starts
    /// istiod, returning once `/ready` answers. Call it from the thread that owns the environment (the test's
    /// thread), since `--pdeathsig` follows the spawning thread.
    pub async fn start(
        cluster: &TestCluster,
        root: &Path,
        options: &IstiodOptions,
    ) -> Result<Self, TestEnvError> {
        let bins = IstioBinaries::locate()?;
        let dir = root.join(format!("istiod-{}", cluster.name));
        let config_dir = dir.join("etc/istio/config");
        std::fs::create_dir_all(&config_dir).map_err(TestEnvError::io(&config_dir))?;
        let mesh = config_dir.join("mesh");
        std::fs::write(&mesh, "trustDomain: cluster.local\n").map_err(TestEnvError::io(&mesh))?;

        let client = cluster.client().await?;
        crate::crds::install(client.clone(), &bins.crds).await?;
        let projection = crate::projection::project_secret(
            client,
            "istio-system",
            "cacerts",
            &dir.join("etc/cacerts"),
        )
        .await?;

        // Another test can bind a port picked here before istiod does (it listens only after its caches
        // synced, seconds later): start again on new ports then, as the other servers do.
        let mut attempt = 1;
        let (process, ports) = loop {
            match spawn_ready(cluster, &bins, options, &dir).await {
                Err(TestEnvError::ExitedEarly { log, .. })
                    if attempt < 3 && crate::ports::port_was_taken(&log) =>
                {
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let log = process.log.clone();
        Ok(Self {
            cluster: cluster.name.clone(),
            http: ports.http,
            secure_grpc: ports.secure_grpc,
            dir,
            log,
            process,
            projection,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// istiod's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET http://<httpAddr><path>` (for example `/debug/clusterz`), as text.
    pub async fn debug(&self, path: &str) -> Result<String, TestEnvError> {
        let url = format!("http://{}{path}", self.http);
        let err = |e: reqwest::Error| TestEnvError::Grpc(format!("GET {url}: {e}"));
        let response = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(err)?;
        response.text().await.map_err(err)
    }

    /// A workload certificate chain from this istiod's CA for ServiceAccount `namespace/name` (created by the
    /// caller), trusting `roots_pem` for istiod's serving certificate.
    pub async fn workload_certificate(
        &self,
        cluster: &TestCluster,
        namespace: &str,
        service_account: &str,
        roots_pem: &str,
    ) -> Result<Vec<String>, TestEnvError> {
        let token = cluster
            .request_token_for(namespace, service_account, &["istio-ca"])
            .await?;
        istio_ca::create_certificate(&self.secure_grpc, roots_pem, &token, 3600).await
    }
}

impl Drop for Istiod {
    fn drop(&mut self) {
        self.projection.abort();
        self.process.stop();
    }
}

/// Polls `/ready` without blocking the runtime (the `cacerts` projection runs on it meanwhile).
/// The addresses tests reach a started istiod at.
struct IstiodPorts {
    http: String,
    secure_grpc: String,
}

/// Starts pilot-discovery on fresh loopback ports and waits until `/ready` answers.
async fn spawn_ready(
    cluster: &TestCluster,
    bins: &IstioBinaries,
    options: &IstiodOptions,
    dir: &Path,
) -> Result<(ManagedProcess, IstiodPorts), TestEnvError> {
    let port = || free_port().map_err(TestEnvError::io(dir));
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let (http, grpc, secure_grpc, https, monitoring, ctrlz) =
        (port()?, port()?, port()?, port()?, port()?, port()?);
    let args = vec![
        "discovery".to_string(),
        format!("--kubeconfig={}", cluster.kubeconfig.display()),
        format!("--clusterID={}", cluster.name),
        "--meshConfig=./etc/istio/config/mesh".to_string(),
        format!("--httpAddr={}", addr(http)),
        format!("--grpcAddr={}", addr(grpc)),
        format!("--secureGRPCAddr={}", addr(secure_grpc)),
        format!("--httpsAddr={}", addr(https)),
        format!("--monitoringAddr={}", addr(monitoring)),
        "--ctrlz_address=127.0.0.1".to_string(),
        format!("--ctrlz_port={ctrlz}"),
        "--shutdownDuration=1s".to_string(),
    ];
    let mut env = vec![
        ("POD_NAMESPACE", "istio-system".to_string()),
        ("POD_NAME", format!("istiod-{}", cluster.name)),
        ("CLUSTER_ID", cluster.name.clone()),
        ("REVISION", "default".to_string()),
        ("PILOT_CERT_PROVIDER", "istiod".to_string()),
        ("ISTIOD_CUSTOM_HOST", istio_ca::ISTIOD_HOST.to_string()),
    ];
    if options.multiroot {
        env.push(("ISTIO_MULTIROOT_MESH", "true".to_string()));
    }
    let log = dir.join("istiod.log");
    let mut process = ManagedProcess::spawn_in(
        &format!("istiod {}", cluster.name),
        &bins.pilot_discovery,
        &args,
        &env,
        dir,
        log.clone(),
    )?;
    let http = addr(http);
    wait_ready(&mut process, &format!("http://{http}/ready")).await?;
    Ok((
        process,
        IstiodPorts {
            http,
            secure_grpc: addr(secure_grpc),
        },
    ))
}

async fn wait_ready(process: &mut ManagedProcess, url: &str) -> Result<(), TestEnvError> {
    let timeout = Duration::from_secs(120);
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| TestEnvError::Grpc(e.to_string()))?;
    loop {
        if let Some(status) = process.exit_status() {
            return Err(TestEnvError::ExitedEarly {
                what: process.name.clone(),
                status,
                log: process.log.clone(),
            });
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(TestEnvError::NotReady {
                what: process.name.clone(),
                secs: timeout.as_secs(),
                log: process.log.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs Istio's CRDs (from `scripts/build-istio`) into `cluster` and waits until they are Established, as
/// `helm install istio-base` would: for tests that apply Istio objects without running istiod.
pub async fn install_istio_crds(cluster: &TestCluster) -> Result<usize, TestEnvError> {
    let bins = IstioBinaries::locate()?;
    crate::crds::install(cluster.client().await?, &bins.crds).await
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why a cluster could not be reached from its kubeconfig. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cluster {cluster}: cannot read kubeconfig {path}: {reason}; fix clusters[].kubeconfig in the mesh file"
    )]
    Read {
        cluster: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "cluster {cluster}: kubeconfig {path} is not usable: {reason}; check its current-context or set clusters[].context"
    )]
    Invalid {
        cluster: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "cluster {cluster}: no kubeconfig given and none found ($KUBECONFIG, ~/.kube/config): {reason}"
    )]
    Default { cluster: String, reason: String },
}

/// A connected cluster: a kube client plus the API address its kubeconfig names.
#[derive(Clone)]
pub struct KubeCluster {
    pub name: String,
    pub client: kube::Client,
    pub server: String,
    /// PEM of the CA its kubeconfig trusts for the API server, if it embeds one.
    pub ca_pem: Option<String>,
}

/// How long a client waits on the API server. kube-rs reads without a timeout by default, so a hung API
/// server would hang a command forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Between two reads of an answer (or a watch stream).
    pub read: Duration,
    pub write: Duration,
}

impl Timeouts {
    /// For long-lived clients that watch: a watch may sit silent for its server-side timeout (kube-rs asks
    /// for 290 s), so reads get a little longer than that. Still bounded: a hung server is noticed.
    pub const WATCH: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(300),
        write: Duration::from_secs(30),
    };

    /// For one-shot commands (`plan`, `apply`, `verify`): every request must answer within `request`.
    pub fn requests(request: Duration) -> Timeouts {
        Timeouts {
            connect: request.min(Duration::from_secs(10)),
            read: request,
            write: request,
        }
    }

    fn apply(self, config: &mut kube::Config) {
        config.connect_timeout = Some(self.connect);
        config.read_timeout = Some(self.read);
        config.write_timeout = Some(self.write);
        // Count the read timeout from each request, not from when a pooled connection went idle.
        config.reset_reader_on_write = true;
    }
}

/// Connects to a cluster from `kubeconfig` (or the default one) and optional `context`, with
/// [`Timeouts::WATCH`].
pub async fn connect(
    cluster: &str,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<KubeCluster, ConnectError> {
    connect_with(cluster, kubeconfig, context, Timeouts::WATCH).await
}

/// [`connect`] with explicit timeouts.
pub async fn connect_with(
    cluster: &str,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    timeouts: Timeouts,
) -> Result<KubeCluster, ConnectError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config =
        match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| ConnectError::Read {
                    cluster: cluster.into(),
                    path: path.into(),
                    reason: e.to_string(),
                })?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| ConnectError::Invalid {
                        cluster: cluster.into(),
                        path: path.into(),
                        reason: e.to_string(),
                    })?
            }
            None => kube::Config::from_kubeconfig(&options).await.map_err(|e| {
                ConnectError::Default {
                    cluster: cluster.into(),
                    reason: e.to_string(),
                }
            })?,
        };
    from_config(cluster, config, kubeconfig, timeouts)
}

/// Connects with the in-cluster configuration (ServiceAccount token and CA), else the default kubeconfig.
pub async fn connect_inferred(cluster: &str) -> Result<KubeCluster, ConnectError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| ConnectError::Default {
            cluster: cluster.into(),
            reason: e.to_string(),
        })?;
    from_config(cluster, config, None, Timeouts::WATCH)
}

fn from_config(
    cluster: &str,
    mut config: kube::Config,
    kubeconfig: Option<&Path>,
    timeouts: Timeouts,
) -> Result<KubeCluster, ConnectError> {
    timeouts.apply(&mut config);
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let ca_pem = config
        .root_cert
        .as_ref()
        .map(|certs| certs.iter().map(|der| der_to_pem(der)).collect::<String>());
    let client = kube::Client::try_from(config).map_err(|e| ConnectError::Invalid {
        cluster: cluster.into(),
        path: kubeconfig.map(Path::to_path_buf).unwrap_or_default(),
        reason: e.to_string(),
    })?;
    Ok(KubeCluster {
        name: cluster.to_string(),
        client,
        server,
        ca_pem,
    })
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

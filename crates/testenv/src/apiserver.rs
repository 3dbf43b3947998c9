use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::ClusterPki;
use crate::kubeconfig::admin_kubeconfig;
use crate::node::{KUBERNETES_SERVICE_IP, SERVICE_RANGE};
use crate::process::ManagedProcess;
use crate::{Binaries, TestEnvError, ports::free_port};

/// One "cluster": a real kube-apiserver with RBAC, its own serving CA, an admin identity and a
/// service-account issuer (so TokenRequest and TokenReview work, as OpenBao's Kubernetes auth needs).
pub struct TestCluster {
    pub name: String,
    /// `https://127.0.0.1:<port>`: what peers and OpenBao use to reach this API server.
    pub server: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    /// An admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    pub(crate) process: ManagedProcess,
    /// What [`restart`](Self::restart) needs to start the same server again.
    launch: Launch,
}

/// The binary, flags (same port, etcd prefix and certificates) and credentials of one API server.
struct Launch {
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    pki: ClusterPki,
}

impl TestCluster {
    pub(crate) fn start(
        bins: &Binaries,
        dir: &Path,
        name: &str,
        etcd_url: &str,
        node_host_ip: Option<&str>,
    ) -> Result<Self, TestEnvError> {
        let cdir = dir.join(name);
        std::fs::create_dir_all(&cdir).map_err(TestEnvError::io(&cdir))?;
        let extra_sans: Vec<String> = match node_host_ip {
            Some(ip) => vec![
                ip.to_string(),
                KUBERNETES_SERVICE_IP.to_string(),
                "kubernetes".to_string(),
                "kubernetes.default".to_string(),
                "kubernetes.default.svc.cluster.local".to_string(),
            ],
            None => Vec::new(),
        };
        let pki = ClusterPki::generate(name, &extra_sans)?;
        let write = |file: &str, content: &str| -> Result<PathBuf, TestEnvError> {
            let path = cdir.join(file);
            std::fs::write(&path, content).map_err(TestEnvError::io(&path))?;
            Ok(path)
        };
        let ca = write("ca.crt", &pki.ca_pem)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert_pem)?;
        let serving_key = write("apiserver.key", &pki.serving_key_pem)?;
        let sa_key = write("sa.key", &pki.sa_private_pem)?;
        let sa_pub = write("sa.pub", &pki.sa_public_pem)?;
        let admin_cert = write("admin.crt", &pki.admin_cert_pem)?;
        let admin_key = write("admin.key", &pki.admin_key_pem)?;

        let port = free_port().map_err(TestEnvError::io(&cdir))?;
        let ip = node_host_ip.unwrap_or("127.0.0.1");
        let server = format!("https://{ip}:{port}");
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--etcd-prefix=/{name}"),
            format!("--cert-dir={}", cdir.display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            format!("--secure-port={port}"),
            format!("--bind-address={ip}"),
            format!("--advertise-address={ip}"),
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            "--authorization-mode=RBAC".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--allow-privileged=true".to_string(),
            "--enable-priority-and-fairness=false".to_string(),
            "--v=0".to_string(),
        ];
        match node_host_ip {
            // A node runs pods: the `kubernetes` Service gets this server as its endpoint, the controller
            // manager creates the `default` ServiceAccounts, and logs/exec/port-forward reach the kubelet with
            // the admin client certificate.
            Some(_) => args.extend([
                "--endpoint-reconciler-type=lease".to_string(),
                format!("--kubelet-client-certificate={}", admin_cert.display()),
                format!("--kubelet-client-key={}", admin_key.display()),
                "--kubelet-preferred-address-types=InternalIP".to_string(),
                // istiod's webhooks are called at their Service's endpoints, not through a Service route.
                "--enable-aggregator-routing=true".to_string(),
            ]),
            // No controller manager runs, so nothing would create the `default` ServiceAccount pods need.
            None => args.extend([
                "--endpoint-reconciler-type=none".to_string(),
                "--disable-admission-plugins=ServiceAccount".to_string(),
            ]),
        }
        let launch = Launch {
            bin: bins.kube_apiserver.clone(),
            args,
            log: cdir.join("kube-apiserver.log"),
            pki,
        };
        let mut process = launch.spawn(name)?;
        let pki = &launch.pki;
        let kubeconfig = dir.join(format!("kubeconfig-{name}"));
        std::fs::write(
            &kubeconfig,
            admin_kubeconfig(
                name,
                &server,
                &pki.ca_pem,
                &pki.admin_cert_pem,
                &pki.admin_key_pem,
            ),
        )
        .map_err(TestEnvError::io(&kubeconfig))?;

        launch.wait_ready(&mut process, &server)?;
        Ok(Self {
            name: name.to_string(),
            server,
            ca_pem: launch.pki.ca_pem.clone(),
            kubeconfig,
            process,
            launch,
        })
    }

    /// Stops the API server (SIGKILL), as a fault-injection step; its state stays in etcd.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the API server again on the same port, etcd prefix and certificates, and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), TestEnvError> {
        self.process.stop();
        self.process = self.launch.spawn(&self.name)?;
        self.launch.wait_ready(&mut self.process, &self.server)
    }

    /// The same cluster seen through `server` (a fault proxy in front of it): an admin kubeconfig file that
    /// points there, with the serving certificate's name kept for TLS.
    pub fn kubeconfig_via(&self, server: &str, path: &Path) -> Result<(), TestEnvError> {
        let text = admin_kubeconfig(
            &self.name,
            server,
            &self.launch.pki.ca_pem,
            &self.launch.pki.admin_cert_pem,
            &self.launch.pki.admin_key_pem,
        );
        std::fs::write(path, text).map_err(TestEnvError::io(path))
    }

    /// A kube client with admin rights on this cluster.
    pub async fn client(&self) -> Result<kube::Client, TestEnvError> {
        let config = self.config().await?;
        kube::Client::try_from(config).map_err(|e| TestEnvError::Kube(e.to_string()))
    }

    pub async fn config(&self) -> Result<kube::Config, TestEnvError> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| TestEnvError::Kube(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| TestEnvError::Kube(e.to_string()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// kube-controller-manager running only its `serviceaccount-token` controller for this cluster: it fills
    /// legacy `kubernetes.io/service-account-token` Secrets (a never-expiring token signed with the key this
    /// API server verifies, and `ca.crt`), as `istioctl create-remote-secret` waits for. Nothing else runs.
    pub(crate) fn start_token_controller(
        &self,
        bin: &Path,
        dir: &Path,
    ) -> Result<ManagedProcess, TestEnvError> {
        let cdir = dir.join(&self.name);
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--controllers=serviceaccount-token".to_string(),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            format!("--root-ca-file={}", cdir.join("ca.crt").display()),
            format!(
                "--service-account-private-key-file={}",
                cdir.join("sa.key").display()
            ),
            "--v=1".to_string(),
        ];
        ManagedProcess::spawn(
            &format!("kube-controller-manager (tokens) {}", self.name),
            bin,
            &args,
            cdir.join("kube-controller-manager.log"),
        )
    }

    /// One GET of `path` on this API server as admin, off any async runtime; `None` on any failure.
    pub(crate) fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let url = format!("{}{path}", self.server);
        std::thread::scope(|s| {
            s.spawn(|| crate::probe::get_json(&self.launch.pki, &url))
                .join()
                .ok()
                .flatten()
        })
    }

    /// Creates ServiceAccount `namespace/name` bound to `system:auth-delegator`: OpenBao's Kubernetes auth,
    /// configured without a reviewer token, reviews each login JWT with the JWT itself.
    pub async fn create_login_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(), TestEnvError> {
        let client = self.client().await?;
        let err = |e: kube::Error| TestEnvError::Kube(e.to_string());
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &sa)
            .await
            .map_err(err)?;
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}-auth-delegator")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
        }))
        .map_err(|e| TestEnvError::Kube(e.to_string()))?;
        Api::<ClusterRoleBinding>::all(client)
            .create(&PostParams::default(), &binding)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// A 10-minute bound token for ServiceAccount `namespace/name` from the TokenRequest API.
    pub async fn request_token(&self, namespace: &str, name: &str) -> Result<String, TestEnvError> {
        self.request_token_for(namespace, name, &[]).await
    }

    /// The same for given audiences (istiod's CA reviews tokens for audience `istio-ca`).
    pub async fn request_token_for(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) -> Result<String, TestEnvError> {
        let client = self.client().await?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(600),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let issued = Api::<ServiceAccount>::namespaced(client, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| TestEnvError::Kube(e.to_string()))?;
        issued
            .status
            .map(|s| s.token)
            .ok_or_else(|| TestEnvError::Kube("TokenRequest returned no token".into()))
    }
}

impl Launch {
    fn spawn(&self, name: &str) -> Result<ManagedProcess, TestEnvError> {
        ManagedProcess::spawn(
            &format!("kube-apiserver {name}"),
            &self.bin,
            &self.args,
            self.log.clone(),
        )
    }

    fn wait_ready(&self, process: &mut ManagedProcess, server: &str) -> Result<(), TestEnvError> {
        let readyz = format!("{server}/readyz");
        process.wait_ready(Duration::from_secs(120), || {
            crate::probe::http_ok(Some(&self.pki), &readyz)
        })
    }
}

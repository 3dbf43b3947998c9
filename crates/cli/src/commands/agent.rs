use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshtrust_agent::{AgentConfig, JwtSource};
use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};

use crate::args::{AgentArgs, Global};
use crate::context::{cluster_named, load_mesh};
use crate::error::CliError;

/// The projected ServiceAccount token every pod gets: its presence is how the agent knows it runs in a pod.
const POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

pub async fn run(global: &Global, args: AgentArgs) -> Result<ExitCode, CliError> {
    let mesh = load_mesh(global)?;
    // The agent needs only where OpenBao is: it logs in with its own ServiceAccount for its own token.
    let mut bao_config = OpenBaoConfig::from_env_for_login(
        mesh.openbao.address.as_deref(),
        mesh.openbao.namespace.as_deref(),
    )?
    .with_mesh_ca_cert(mesh.openbao.ca_cert.as_deref());
    bao_config.allow_insecure_http = global.allow_insecure_http;
    let address = bao_config.address.clone();
    let openbao = OpenBaoClient::new(bao_config)?.with_timeout(args.openbao_timeout)?;
    let in_pod = Path::new(POD_TOKEN).is_file();
    let settings = cluster_named(&mesh, &args.cluster, global)?;
    let kubeconfig = kubeconfig(
        args.kubeconfig.clone(),
        settings.kubeconfig.as_deref(),
        in_pod,
    )?;
    let jwt = match (&args.token_file, args.token_request || !in_pod) {
        (Some(file), _) => JwtSource::File(file.clone()),
        (None, true) => JwtSource::TokenRequest {
            cluster: settings.name.clone(),
            namespace: mesh.agent.namespace.clone(),
            service_account: mesh.agent.service_account.clone(),
        },
        (None, false) => JwtSource::File(PathBuf::from(POD_TOKEN)),
    };
    let listen = listen_address(args.listen, in_pod)?;
    tracing::info!(
        "agent for cluster {}: {}; logging in to OpenBao at {address} through auth/{} with {}; health on http://{listen}",
        settings.name,
        match &kubeconfig {
            Some(path) => format!(
                "kubeconfig {}{}",
                path.display(),
                settings
                    .context
                    .as_deref()
                    .map(|c| format!(" (context {c})"))
                    .unwrap_or_default()
            ),
            None => "in-cluster configuration".to_string(),
        },
        settings.auth_mount,
        match &jwt {
            JwtSource::File(path) => format!("the token in {}", path.display()),
            JwtSource::TokenRequest {
                namespace,
                service_account,
                ..
            } => format!("a TokenRequest for the ServiceAccount {namespace}/{service_account}"),
        },
    );
    let config = AgentConfig {
        poll_interval: args.poll_interval,
        resync_interval: args.resync_interval,
        full_reread_interval: args.full_reread_interval,
        round_deadline: args.round_timeout,
        mesh,
        cluster: args.cluster,
        kubeconfig,
        jwt,
        listen,
        openbao,
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending::<()>().await,
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    meshtrust_agent::run(config, shutdown)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// The kubeconfig the agent connects with: the flag; in a pod the in-cluster configuration (`None`); outside
/// one the mesh file's kubeconfig for the cluster, else the first default one (as apply reads it).
fn kubeconfig(
    flag: Option<PathBuf>,
    from_mesh: Option<&Path>,
    in_pod: bool,
) -> Result<Option<PathBuf>, CliError> {
    if flag.is_some() || in_pod {
        return Ok(flag);
    }
    if let Some(path) = from_mesh {
        return Ok(Some(path.to_path_buf()));
    }
    Ok(crate::commands::init::kubeconfig_files(None)?
        .into_iter()
        .next())
}

/// The health address; a port already in use is an error that says how to pick another one.
fn listen_address(flag: Option<SocketAddr>, in_pod: bool) -> Result<SocketAddr, CliError> {
    let addr = flag.unwrap_or_else(|| {
        // In a pod the kubelet probes the pod IP; on a workstation nothing outside needs the port.
        let ip = if in_pod { [0, 0, 0, 0] } else { [127, 0, 0, 1] };
        SocketAddr::from((ip, 8080))
    });
    // Binding and closing is enough to find a port in use; the agent binds again right after.
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(addr),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(CliError::Usage(format!(
            "cannot serve health on {addr}: the port is already in use (another agent on this machine?); \
             give each agent its own with --listen 127.0.0.1:PORT"
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "cannot serve health on {addr}: {e}; pass --listen with an address of this machine"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = listen_address(Some(addr), false)
            .expect_err("in use")
            .to_string();
        assert!(err.contains("already in use"), "{err}");
        assert!(err.contains("--listen 127.0.0.1:PORT"), "{err}");
        drop(taken);
        assert_eq!(listen_address(Some(addr), false).expect("free again"), addr);
    }

    #[test]
    fn outside_a_pod_the_mesh_files_kubeconfig_is_used() {
        let mesh = Path::new("/meshes/kubeconfig-a");
        assert_eq!(
            kubeconfig(None, Some(mesh), false).expect("kubeconfig"),
            Some(mesh.to_path_buf())
        );
        assert_eq!(kubeconfig(None, Some(mesh), true).expect("in pod"), None);
        let flag = PathBuf::from("/flag");
        assert_eq!(
            kubeconfig(Some(flag.clone()), Some(mesh), false).expect("flag"),
            Some(flag)
        );
    }
}

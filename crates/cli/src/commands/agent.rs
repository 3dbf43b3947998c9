use std::process::ExitCode;

use meshtrust_agent::{AgentConfig, JwtSource};
use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};

use crate::args::{AgentArgs, Global};
use crate::context::load_mesh;
use crate::error::CliError;

pub async fn run(global: &Global, args: AgentArgs) -> Result<ExitCode, CliError> {
    let mesh = load_mesh(global)?;
    // The agent needs only OpenBao's address: it logs in with its own ServiceAccount for its own token.
    let address = std::env::var("BAO_ADDR")
        .or_else(|_| std::env::var("VAULT_ADDR"))
        .ok()
        .or_else(|| mesh.openbao.address.clone())
        .ok_or_else(|| {
            CliError::Usage(
                "no OpenBao address: set openbao.address in the mesh file or BAO_ADDR".into(),
            )
        })?;
    let openbao = OpenBaoClient::new(OpenBaoConfig {
        address: address.trim_end_matches('/').to_string(),
        token: String::new(),
        namespace: mesh.openbao.namespace.clone(),
        ca_cert_pem: None,
        allow_insecure_http: false,
    })?
    .with_timeout(args.openbao_timeout)?;
    let jwt = if args.token_request {
        JwtSource::TokenRequest {
            namespace: mesh.agent.namespace.clone(),
            service_account: mesh.agent.service_account.clone(),
        }
    } else {
        JwtSource::File(args.token_file.clone())
    };
    let config = AgentConfig {
        poll_interval: args.poll_interval,
        resync_interval: args.resync_interval,
        mesh,
        cluster: args.cluster,
        kubeconfig: args.kubeconfig,
        jwt,
        listen: args.listen,
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

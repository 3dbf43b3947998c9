use std::process::ExitCode;

use meshtrust_core::istio::remote_secret_manifest;
use meshtrust_engine::published::fetch;
use meshtrust_render::{
    AgentChart, AgentOpenBao, Flavor, RenderOptions, agent_manifests_with, gitops,
};

use crate::args::{
    AgentFrom, FlavorArg, GitopsArgs, Global, RemoteSecretArgs, RenderAgentArgs, RenderArgs,
    RenderCommand,
};
use crate::context::{cluster_named, connect_openbao, load_mesh};
use crate::error::CliError;

pub async fn run(global: &Global, args: RenderArgs) -> Result<ExitCode, CliError> {
    match args.command {
        RenderCommand::Gitops(args) => render_gitops(global, args),
        RenderCommand::RemoteSecret(args) => render_remote_secret(global, args).await,
        RenderCommand::Agent(args) => render_agent(global, args),
    }
}

fn yaml(value: &serde_json::Value) -> Result<String, CliError> {
    serde_saphyr::to_string(value).map_err(|e| CliError::Usage(format!("cannot render YAML: {e}")))
}

fn render_gitops(global: &Global, args: GitopsArgs) -> Result<ExitCode, CliError> {
    let mesh = load_mesh(global)?;
    let flavor = match args.flavor {
        FlavorArg::Argocd => Flavor::ArgoCd,
        FlavorArg::Flux => Flavor::Flux,
    };
    let agent_chart = match (args.agent_from, args.chart_repo) {
        (AgentFrom::Chart, Some(repo_url)) => Some(AgentChart {
            repo_url,
            version: args.chart_version,
            mesh_text: mesh_text(global)?,
        }),
        (AgentFrom::Chart, None) => {
            return Err(CliError::Usage(
                "--agent-from chart needs --chart-repo URL, the Helm repository serving meshtrust-agent".into(),
            ));
        }
        (AgentFrom::Manifests, _) => None,
    };
    let options = RenderOptions {
        repo_url: args.repo_url,
        path: args.path,
        istio_version: args.istio_version,
        agent_chart,
        ..RenderOptions::default()
    };
    let rendered = gitops(&mesh, flavor, &options);
    match args.out {
        None => {
            let mut out = String::new();
            for r in &rendered {
                out.push_str(&format!(
                    "---\n# Source: {}/{}\n{}",
                    r.cluster,
                    r.file,
                    yaml(&r.object)?
                ));
            }
            print!("{out}");
        }
        Some(dir) => {
            for r in &rendered {
                write_atomic(&dir.join(&r.cluster), &r.file, &yaml(&r.object)?)?;
            }
            eprintln!("wrote {} files under {}", rendered.len(), dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn render_remote_secret(
    global: &Global,
    args: RemoteSecretArgs,
) -> Result<ExitCode, CliError> {
    let mesh = load_mesh(global)?;
    let cluster = cluster_named(&mesh, &args.cluster, global)?;
    let bao = connect_openbao(&mesh, global)?;
    let (kubeconfig, _) = fetch(&bao, &mesh, &cluster.name).await?;
    let text = kubeconfig.expose_str().ok_or_else(|| {
        CliError::Usage(format!(
            "the kubeconfig published for {} is not UTF-8",
            cluster.name
        ))
    })?;
    print!(
        "{}",
        remote_secret_manifest(&cluster.name, &cluster.istio_namespace, text)
    );
    Ok(ExitCode::SUCCESS)
}

/// OpenBao's CA for the agent's deploy files: a readable PEM certificate, or a message naming the file.
fn read_openbao_ca(path: &std::path::Path) -> Result<String, CliError> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read --openbao-cacert {}: {e}",
            path.display()
        ))
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(CliError::Usage(format!(
            "--openbao-cacert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(pem)
}

fn render_agent(global: &Global, args: RenderAgentArgs) -> Result<ExitCode, CliError> {
    let mesh = load_mesh(global)?;
    let cluster = cluster_named(&mesh, &args.cluster, global)?;
    let text = mesh_text(global)?;
    if let Some(bad) = args
        .openbao_addrs
        .iter()
        .find(|a| !a.starts_with("https://") && !a.starts_with("http://"))
    {
        return Err(CliError::Usage(format!(
            "--openbao-addr {bad:?} is not a URL; give each OpenBao node as https://host:8200"
        )));
    }
    let openbao = AgentOpenBao {
        addresses: args.openbao_addrs.clone(),
        ca_pem: match &args.openbao_cacert {
            Some(path) => Some(read_openbao_ca(path)?),
            None => None,
        },
    };
    let objects = agent_manifests_with(&mesh, cluster, &text, &args.image, &openbao);
    match &args.out {
        None => {
            let mut out = String::new();
            for object in &objects {
                out.push_str("---\n");
                out.push_str(&yaml(object)?);
            }
            print!("{out}");
        }
        Some(dir) => {
            let mut files = Vec::new();
            for (i, object) in objects.iter().enumerate() {
                let kind = object["kind"].as_str().unwrap_or("object").to_lowercase();
                let name = object["metadata"]["name"].as_str().unwrap_or("unnamed");
                let file = format!("{i:02}-{kind}-{name}.yaml");
                write_atomic(dir, &file, &yaml(object)?)?;
                files.push(file);
            }
            let kustomization = serde_json::json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": files,
            });
            write_atomic(dir, "kustomization.yaml", &yaml(&kustomization)?)?;
            eprintln!(
                "wrote {} files and kustomization.yaml into {}",
                objects.len(),
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The mesh file as written (comments kept), for the agent's ConfigMap.
fn mesh_text(global: &Global) -> Result<String, CliError> {
    crate::context::read_mesh_text(&global.mesh)
}

/// Writes `dir/file` through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(dir: &std::path::Path, file: &str, content: &str) -> Result<(), CliError> {
    let io =
        |e: std::io::Error| CliError::Usage(format!("cannot write into {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, content).map_err(io)?;
    std::fs::rename(&tmp, dir.join(file)).map_err(io)
}

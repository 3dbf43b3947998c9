use std::process::ExitCode;

use meshtrust_core::bao_plan::policy_roots;
use meshtrust_core::policy::{ADMIN_POLICY, admin_policy, agent_policy, agent_policy_name};
use serde_json::json;

use crate::args::{BaoArgs, BaoCommand, Global};
use crate::context::load_mesh;
use crate::error::CliError;
use crate::output::emit;

pub fn run(global: &Global, args: BaoArgs) -> Result<ExitCode, CliError> {
    let BaoCommand::Policies(args) = args.command;
    let mesh = load_mesh(global)?;
    // Printed without asking OpenBao: as for a mesh whose first root exists. `meshtrust plan` compares the
    // policies for the roots OpenBao actually holds.
    let roots = policy_roots(&mesh, &[]);
    let mut policies: Vec<(String, String)> = Vec::new();
    if !args.admin {
        for c in &mesh.clusters {
            if args.cluster.as_deref().is_none_or(|want| want == c.name) {
                policies.push((agent_policy_name(&c.name), agent_policy(&mesh, c, &roots)));
            }
        }
        if let Some(want) = &args.cluster
            && policies.is_empty()
        {
            return Err(CliError::Usage(format!(
                "--cluster {want}: no such cluster in {}",
                global.mesh.display()
            )));
        }
    }
    if args.cluster.is_none() {
        policies.push((ADMIN_POLICY.to_string(), admin_policy(&mesh, &roots)));
    }
    let single = policies.len() == 1;
    let value: Vec<_> = policies
        .iter()
        .map(|(name, text)| json!({"name": name, "policy": text}))
        .collect();
    emit(global.output, &value, || {
        if single {
            return policies[0].1.clone();
        }
        policies
            .iter()
            .map(|(name, text)| format!("# ---- policy {name} ----\n{text}\n"))
            .collect()
    });
    Ok(ExitCode::SUCCESS)
}

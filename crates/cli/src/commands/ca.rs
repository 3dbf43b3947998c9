use std::process::ExitCode;

use meshtrust_core::facts::root_issuer_name;
use meshtrust_core::mesh::CaMode;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::ports::{OpenBao, RootRequest};

use crate::args::{CaArgs, CaCommand, Global, OutputFormat, RotateArgs};
use crate::context::{Context, connect_all, now};
use crate::error::CliError;

pub async fn run(global: &Global, args: CaArgs) -> Result<ExitCode, CliError> {
    match args.command {
        CaCommand::RotateRoot(rotate) => rotate_root(global, rotate).await,
    }
}

/// Starts a rotation (a new root issuer inside OpenBao) unless one is under way, then applies one phase per
/// round until the plan is empty. Each phase is an ordinary plan, so `meshtrust plan` shows where it stands.
async fn rotate_root(global: &Global, args: RotateArgs) -> Result<ExitCode, CliError> {
    let Context { engine, bao } = connect_all(global).await?;
    let mesh = engine.mesh().clone();
    if mesh.ca.mode != CaMode::BaoPki {
        return Err(CliError::Usage("ca rotate-root works in ca.mode bao-pki; a shared root cannot be rotated without a trust gap".into()));
    }
    let text = global.output == OutputFormat::Text;
    let (plan, observation) = engine.plan(now(), PlanOptions::default()).await?;
    if !plan.is_empty() {
        if text {
            println!(
                "The mesh is not settled yet; finishing the pending plan first (a rotation may be under way):\n\n{plan}"
            );
        }
    } else {
        let next = observation
            .facts
            .openbao
            .newest_root()
            .map(|r| r.generation + 1)
            .ok_or_else(|| {
                CliError::Usage(
                    "there is no root to rotate yet; run `meshtrust apply` first".into(),
                )
            })?;
        let request = RootRequest {
            issuer_name: root_issuer_name(next),
            common_name: mesh.ca.root.common_name.clone(),
            organization: mesh.ca.root.organization.clone(),
            key: mesh.ca.root.key,
            ttl: mesh.ca.root.ttl,
        };
        bao.generate_root(&mesh.openbao.pki_mount, &request).await?;
        if text {
            println!(
                "Generated {} inside OpenBao. Rotation phases follow.",
                request.issuer_name
            );
        }
    }
    let mut phase = 0;
    loop {
        let mut progress = |change: &meshtrust_core::plan::Change,
                            applied: &meshtrust_engine::AppliedChange| {
            if text {
                println!(
                    "  done {} {}: {}\n      because {}",
                    change.target, change.resource, applied.detail, change.reason
                );
            }
        };
        let (plan, report, _) = engine
            .converge(&now, PlanOptions::default(), &mut progress)
            .await?;
        if plan.is_empty() {
            if text {
                println!(
                    "Rotation complete: every cluster trusts and signs with the newest root only."
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        phase += 1;
        if text {
            println!(
                "Round {phase} applied ({} change(s)).",
                report.applied.len()
            );
        }
        if args.step {
            if text {
                println!(
                    "--step: stopping here. Run `meshtrust ca rotate-root --step` again for the next phase."
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !args.phase_wait.is_zero() {
            tokio::time::sleep(args.phase_wait).await;
        }
    }
}

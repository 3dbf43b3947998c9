use std::process::ExitCode;

use meshtrust_core::mesh::CaMode;
use meshtrust_core::planner::PlanOptions;
use meshtrust_engine::{Engine, RotationStart};

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
    let Context { engine, .. } = connect_all(global).await?;
    if engine.mesh().ca.mode != CaMode::BaoPki {
        return Err(CliError::Usage("ca rotate-root works in ca.mode bao-pki; a shared root cannot be rotated without a trust gap".into()));
    }
    let text = global.output == OutputFormat::Text;
    // The operator paces the phases here (`--step`, `--phase-wait`), so the mesh file's dwell does not apply.
    let options = PlanOptions {
        skip_dwell: true,
        ..Default::default()
    };
    if args.start {
        return start_only(&engine, text).await;
    }
    let (plan, observation) = engine.plan(now(), options).await?;
    // A rotation under way is carried on, never restarted; pending renewals do not hold a new one back (the
    // phases renew what falls due on the way). Two runs at once both ask for the same next generation, and
    // OpenBao's issuer-name uniqueness lets exactly one create it.
    if observation.rotation_under_way_in_clusters() {
        if text {
            println!("A root rotation is under way; carrying it on:\n\n{plan}");
        }
    } else {
        let started = engine.start_root_rotation(&observation).await?;
        if text {
            match started {
                RotationStart::Generated { issuer_name } => {
                    println!("Generated {issuer_name} inside OpenBao. Rotation phases follow.")
                }
                RotationStart::AlreadyExists { issuer_name } => println!(
                    "{issuer_name} was created a moment ago by another run. Rotation phases follow."
                ),
            }
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
        let (plan, report, _) = engine.converge(&now, options, &mut progress).await?;
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

/// `--start`: creates the next root when no CA change is pending, and leaves the phases to the agents.
async fn start_only(engine: &Engine, text: bool) -> Result<ExitCode, CliError> {
    let observation = engine.observe(now()).await?;
    if observation.rotation_under_way_in_clusters() {
        return Err(CliError::Usage(
            "not starting a root rotation: one is under way; `meshtrust status` shows its phase and what it waits for".into(),
        ));
    }
    let issuer_name = match engine.start_root_rotation(&observation).await? {
        RotationStart::Generated { issuer_name } | RotationStart::AlreadyExists { issuer_name } => {
            issuer_name
        }
    };
    if text {
        println!(
            "{issuer_name} exists inside OpenBao. The agents now carry every cluster through the phases (trust it, sign with it, wait ca.rootRotation.phaseDwell {}, drop the old root); `meshtrust status` shows the phase and what it waits for.",
            engine.mesh().ca.phase_dwell
        );
    }
    Ok(ExitCode::SUCCESS)
}

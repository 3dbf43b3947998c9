use std::process::ExitCode;
use std::time::{Duration, Instant};

use meshtrust_core::mesh::CaMode;
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::rotation::{RotationPhase, RotationState};
use meshtrust_core::rotation_plan::mesh_rotation;
use meshtrust_engine::{Engine, RotationStart};

use crate::args::{CaArgs, CaCommand, Global, OutputFormat, RotateArgs};
use crate::context::{Context, connect_all, now};
use crate::error::CliError;

pub async fn run(global: &Global, args: CaArgs) -> Result<ExitCode, CliError> {
    match args.command {
        CaCommand::RotateRoot(rotate) => rotate_root(global, rotate).await,
    }
}

/// Exit status of `ca rotate-root` when the rotation is under way and only waits for
/// `ca.rootRotation.phaseDwell` (the agents, or a later run, drop the old root then).
pub const EXIT_DWELL: u8 = 3;
/// Exit status of `ca rotate-root` when a phase is held by something that needs attention (a cluster that
/// does not trust the new root yet, an istiod that did not take it, an agent that publishes nothing).
pub const EXIT_HELD: u8 = 4;

/// How long a phase applied by this run may wait for istiods to serve the new roots (they reload within
/// about a second) before the rotation counts as held.
const HOLD_GRACE: Duration = Duration::from_secs(30);

/// Starts a rotation (a new root issuer inside OpenBao) unless one is under way, then applies one phase per
/// round until the plan is empty. Each phase is an ordinary plan, so `meshtrust plan` shows where it stands.
/// The old root leaves the bundles only after `ca.rootRotation.phaseDwell` (workload certificates signed
/// under it stay trusted until they expire), unless `--skip-dwell` says otherwise.
async fn rotate_root(global: &Global, args: RotateArgs) -> Result<ExitCode, CliError> {
    let Context { engine, .. } = connect_all(global).await?;
    if engine.mesh().ca.mode != CaMode::BaoPki {
        return Err(CliError::Usage("ca rotate-root works in ca.mode bao-pki; a shared root cannot be rotated without a trust gap".into()));
    }
    let text = global.output == OutputFormat::Text;
    let options = PlanOptions {
        skip_dwell: args.skip_dwell,
        ..Default::default()
    };
    if args.skip_dwell {
        eprintln!(
            "WARNING: --skip-dwell drops the old root as soon as every cluster signs with the new one, without waiting ca.rootRotation.phaseDwell ({}): workload certificates signed under the old root (up to their TTL, 24h by default) stop being trusted by other workloads at once.",
            engine.mesh().ca.phase_dwell
        );
    }
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
    run_phases(&engine, &args, options, text).await
}

/// Applies phases until the rotation is complete, or until it waits (for the dwell, or held by something
/// the operator must look at): then says what it waits for and exits with [`EXIT_DWELL`] or [`EXIT_HELD`],
/// unless `--wait` keeps it polling.
async fn run_phases(
    engine: &Engine,
    args: &RotateArgs,
    options: PlanOptions,
    text: bool,
) -> Result<ExitCode, CliError> {
    let mut round = 0;
    let mut last_waits: Vec<String> = Vec::new();
    let mut last_progress = Instant::now();
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
        let (plan, report, observation) = engine.converge(&now, options, &mut progress).await?;
        if !plan.is_empty() {
            round += 1;
            last_progress = Instant::now();
            if text {
                println!(
                    "Round {round} applied ({} change(s)).",
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
            continue;
        }
        let rotation = rotation_state(engine, observation.facts(), options);
        if rotation.phase == RotationPhase::Settled {
            if text {
                println!(
                    "Rotation complete: every cluster trusts and signs with the newest root only."
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let dwell_only = rotation.phase == RotationPhase::Dwell;
        // Right after a phase, istiod takes a moment to serve the new roots: not a hold yet.
        if !dwell_only && round > 0 && last_progress.elapsed() < HOLD_GRACE {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if text && rotation.waiting != last_waits {
            print_waiting(&rotation, dwell_only, args.wait);
        }
        last_waits = rotation.waiting.clone();
        if !args.wait {
            return Ok(ExitCode::from(if dwell_only {
                EXIT_DWELL
            } else {
                EXIT_HELD
            }));
        }
        // Poll: the dwell's end, or every few seconds while a phase is held.
        let pause = rotation
            .dwell_left
            .filter(|_| dwell_only)
            .map_or(5, |left| left.clamp(1, 30));
        tokio::time::sleep(Duration::from_secs(pause.unsigned_abs())).await;
    }
}

fn rotation_state(
    engine: &Engine,
    observed: &meshtrust_core::facts::Observed,
    options: PlanOptions,
) -> RotationState {
    let newest = observed.openbao.newest_root().map_or(1, |r| r.generation);
    mesh_rotation(engine.mesh(), observed, newest, options)
}

fn print_waiting(rotation: &RotationState, dwell_only: bool, waiting: bool) {
    println!(
        "Rotation not complete ({:?}); nothing to apply now. It waits for:",
        rotation.phase
    );
    for wait in &rotation.waiting {
        println!("  - {wait}");
    }
    if waiting {
        println!("--wait: checking again until it is complete.");
    } else if dwell_only {
        println!(
            "The agents drop the old root when the dwell ends; without agents, run `meshtrust ca rotate-root` again then (or now with --wait). Exit status {EXIT_DWELL}: waiting for the dwell."
        );
    } else {
        println!(
            "Exit status {EXIT_HELD}: the rotation is held; fix what it waits for, then run `meshtrust ca rotate-root` again (`meshtrust status` shows the phase)."
        );
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

use std::process::ExitCode;

use meshtrust_core::planner::PlanOptions;
use serde_json::json;

use crate::args::{Global, PlanArgs};
use crate::context::{connect_all, now};
use crate::error::CliError;
use crate::output::emit;
use crate::progress::Progress;

pub async fn run(global: &Global, args: PlanArgs) -> Result<ExitCode, CliError> {
    let mut ctx = connect_all(global).await?;
    if args.openbao_only {
        ctx.engine = ctx.engine.with_scope(meshtrust_engine::Scope::OpenBaoOnly);
    }
    let mesh = ctx.engine.mesh();
    let progress = Progress::new(
        global.output,
        format!(
            "reading OpenBao and {} cluster(s), then planning",
            mesh.clusters.len()
        ),
    );
    let mut on_change = |change: &meshtrust_core::plan::Change,
                         applied: &meshtrust_engine::AppliedChange| {
        progress.applied(change, applied);
    };
    let (plan, report, _) = ctx
        .engine
        .converge_announcing(
            &now,
            PlanOptions {
                adopt: args.adopt,
                only: args.only.map(|o| o.domain()),
                destroy_imported_key: args.destroy_imported_key,
                ..Default::default()
            },
            &mut |plan| progress.planned(plan.changes.len()),
            &mut on_change,
        )
        .await?;
    drop(progress);
    emit(
        global.output,
        &json!({ "plan": plan, "applied": report.applied, "warnings": report.warnings }),
        || {
            let mut out = String::new();
            for w in &report.warnings {
                out.push_str(&format!("WARNING: {w}\n"));
            }
            if report.applied.is_empty() {
                out.push_str("No changes. OpenBao and every cluster match the mesh file.\n");
            } else {
                out.push_str(&format!(
                    "Apply complete: {} change(s).\n",
                    report.applied.len()
                ));
            }
            out
        },
    );
    Ok(ExitCode::SUCCESS)
}

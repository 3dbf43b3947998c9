use std::process::ExitCode;

use meshtrust_core::planner::PlanOptions;
use serde_json::json;

use crate::args::{Global, OutputFormat, PlanArgs};
use crate::context::{connect_all, now};
use crate::error::CliError;
use crate::output::emit;

pub async fn run(global: &Global, args: PlanArgs) -> Result<ExitCode, CliError> {
    let mut ctx = connect_all(global).await?;
    if args.openbao_only {
        ctx.engine = ctx.engine.with_scope(meshtrust_engine::Scope::OpenBaoOnly);
    }
    let text = global.output == OutputFormat::Text;
    let mut progress = |change: &meshtrust_core::plan::Change,
                        applied: &meshtrust_engine::AppliedChange| {
        if text {
            println!(
                "  done {} {}: {}",
                change.target, change.resource, applied.detail
            );
        }
    };
    let (plan, report, _) = ctx
        .engine
        .converge(
            &now,
            PlanOptions {
                adopt: args.adopt,
                ..Default::default()
            },
            &mut progress,
        )
        .await?;
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

use std::process::ExitCode;

use meshtrust_core::planner::PlanOptions;

use crate::args::{Global, PlanArgs};
use crate::context::{connect_all, now};
use crate::error::CliError;
use crate::output::emit;

pub async fn run(global: &Global, args: PlanArgs) -> Result<ExitCode, CliError> {
    let mut ctx = connect_all(global).await?;
    if args.openbao_only {
        ctx.engine = ctx.engine.with_scope(meshtrust_engine::Scope::OpenBaoOnly);
    }
    let (plan, _) = ctx
        .engine
        .plan(
            now(),
            PlanOptions {
                adopt: args.adopt,
                only: args.only.map(|o| o.domain()),
                destroy_imported_key: args.destroy_imported_key,
                ..Default::default()
            },
        )
        .await?;
    let mesh = ctx.engine.mesh();
    emit(global.output, &plan, || {
        format!(
            "meshtrust plan: mesh {} ({} clusters, OpenBao {})\n\n{plan}",
            mesh.mesh_id,
            mesh.clusters.len(),
            ctx.bao.address()
        )
    });
    Ok(ExitCode::SUCCESS)
}

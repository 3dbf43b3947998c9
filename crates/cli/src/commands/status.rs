use std::process::ExitCode;

use serde_json::json;

use crate::args::{Global, StatusArgs};
use crate::commands::verify::{rows, table};
use crate::context::{connect_all, now};
use crate::error::CliError;
use crate::output::emit;

/// One table of the mesh: roots, intermediates, peers synced, reader tokens. Reads only; always exits 0 when
/// everything could be read (use `verify` for a pass/fail answer).
pub async fn run(global: &Global, _args: StatusArgs) -> Result<ExitCode, CliError> {
    let ctx = connect_all(global).await?;
    let mesh = ctx.engine.mesh();
    let observation = ctx.engine.observe(now()).await?;
    let rows = rows(mesh, &observation);
    let roots = &observation.facts().openbao.roots;
    emit(
        global.output,
        &json!({ "mesh": mesh.mesh_id, "roots": roots, "clusters": rows }),
        || {
            let mut out = format!("mesh {} — OpenBao {}\n", mesh.mesh_id, ctx.bao.address());
            for r in roots {
                out.push_str(&format!(
                    "  root {} sha256 {} (key internal: {})\n",
                    r.issuer_name(),
                    r.cert.fingerprint,
                    r.key_internal
                ));
            }
            out.push('\n');
            out.push_str(&table(&rows, observation.facts().now));
            out.push_str("\nAgents: their health is on each agent's /readyz and /metrics inside its cluster; the columns above show what they maintain.\n");
            out
        },
    );
    Ok(ExitCode::SUCCESS)
}

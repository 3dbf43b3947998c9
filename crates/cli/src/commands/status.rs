use std::process::ExitCode;

use meshtrust_core::facts::Observed;
use meshtrust_core::mesh::{CaMode, Mesh};
use meshtrust_core::planner::PlanOptions;
use meshtrust_core::rotation::RotationState;
use meshtrust_core::rotation_plan::mesh_rotation;
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
    let rotation = rotation(mesh, observation.facts());
    let warnings = meshtrust_core::verify::warnings(mesh, observation.facts());
    let now = observation.facts().now;
    // Which server answers (OpenBao, Vault community or Enterprise): one unauthenticated request.
    let server = match ctx.bao.server().await {
        Ok(server) => server.to_string(),
        Err(_) => "OpenBao".to_string(),
    };
    emit(
        global.output,
        &json!({ "mesh": mesh.mesh_id, "roots": roots, "rotation": rotation.as_ref().map(|r| json!({
            "phase": r.phase, "trust": r.trust, "waitingFor": r.waiting, "dwellLeftSeconds": r.dwell_left,
        })), "clusters": rows, "warnings": warnings, "server": server }),
        || {
            let mut out = format!(
                "mesh {} — {server} at {}\n",
                mesh.mesh_id,
                ctx.bao.address()
            );
            for r in roots {
                out.push_str(&format!(
                    "  root {} sha256 {} (key internal: {}), ends {}\n",
                    r.issuer_name(),
                    r.cert.fingerprint,
                    r.key_internal,
                    meshtrust_core::duration::when(r.cert.not_after, now)
                ));
            }
            for w in &warnings {
                out.push_str(&format!("  WARN {w}\n"));
            }
            if let Some(r) = &rotation {
                out.push_str(&format!(
                    "  root rotation: {:?} (trusted now: generations {:?})\n",
                    r.phase, r.trust
                ));
                for wait in &r.waiting {
                    out.push_str(&format!("    waits for: {wait}\n"));
                }
            }
            out.push('\n');
            out.push_str(&table(&rows, observation.facts().now));
            out.push_str("\nAgents: their health is on each agent's /readyz and /metrics inside its cluster; the columns above show what they maintain.\n");
            out
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// Where a root rotation stands, judged on every cluster as the agents judge it (with the dwell); `None` when
/// no rotation ever happened (one root).
fn rotation(mesh: &Mesh, observed: &Observed) -> Option<RotationState> {
    if mesh.ca.mode != CaMode::BaoPki || !observed.trust_facts_needed() {
        return None;
    }
    let newest = observed.openbao.newest_root()?.generation;
    Some(mesh_rotation(
        mesh,
        observed,
        newest,
        PlanOptions::default(),
    ))
}

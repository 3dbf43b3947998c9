use std::process::ExitCode;

use meshtrust_core::facts::CacertsFacts;
use meshtrust_core::verify::verify_trust;
use serde_json::json;

use crate::args::{Global, VerifyArgs};
use crate::context::{connect_all, now};
use crate::error::CliError;
use crate::output::emit;

pub async fn run(global: &Global, _args: VerifyArgs) -> Result<ExitCode, CliError> {
    let ctx = connect_all(global).await?;
    let mesh = ctx.engine.mesh();
    let observation = ctx.engine.observe(now()).await?;
    let findings = verify_trust(mesh, &observation.facts);
    let rows: Vec<serde_json::Value> = mesh
        .clusters
        .iter()
        .map(|c| {
            let (root, serial, not_after) =
                match observation.facts.clusters.get(&c.name).map(|f| &f.cacerts) {
                    Some(CacertsFacts::Managed(s)) => (
                        s.trusted_roots
                            .iter()
                            .map(|f| f.get(..16).unwrap_or(f))
                            .collect::<Vec<_>>()
                            .join("+"),
                        s.ca_cert
                            .as_ref()
                            .map(|c| c.serial.clone())
                            .unwrap_or_default(),
                        s.ca_cert.as_ref().map(|c| c.not_after).unwrap_or_default(),
                    ),
                    _ => ("-".into(), "-".into(), 0),
                };
            json!({"cluster": c.name, "roots": root, "caSerial": serial, "caNotAfter": not_after})
        })
        .collect();
    let ok = findings.is_empty();
    emit(
        global.output,
        &json!({ "ok": ok, "clusters": rows, "findings": findings }),
        || {
            let mut out = format!(
                "{:<16} {:<36} {:<28} {}\n",
                "CLUSTER", "ROOT(S) sha256", "CA SERIAL", "CA EXPIRES"
            );
            for r in &rows {
                let expires = r["caNotAfter"]
                    .as_i64()
                    .filter(|t| *t > 0)
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok());
                out.push_str(&format!(
                    "{:<16} {:<36} {:<28} {}\n",
                    r["cluster"].as_str().unwrap_or_default(),
                    r["roots"].as_str().unwrap_or_default(),
                    r["caSerial"]
                        .as_str()
                        .unwrap_or_default()
                        .get(..26)
                        .unwrap_or(r["caSerial"].as_str().unwrap_or_default()),
                    expires
                        .map(|t| t.date().to_string())
                        .unwrap_or_else(|| "-".into())
                ));
            }
            if ok {
                out.push_str("\nOK: every cluster trusts the same roots, every chain verifies and every key matches.\n");
            } else {
                out.push_str(&format!("\n{} finding(s):\n", findings.len()));
                for f in &findings {
                    out.push_str(&format!(
                        "  FAIL {} {}: {}\n       fix: {}\n",
                        f.cluster, f.object, f.problem, f.fix
                    ));
                }
            }
            out
        },
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! The file's header: `apiVersion`, `kind` and `meshID`.

use super::API_VERSION;
use super::check::{Checker, is_dns_label, is_yaml_plain};

/// Checks the schema markers and returns the mesh ID (default `mesh1`).
pub(super) fn validate(
    api_version: Option<&str>,
    kind: Option<&str>,
    mesh_id: Option<String>,
    c: &mut Checker,
) -> String {
    match api_version {
        Some(API_VERSION) => {}
        None => c.problem(
            "apiVersion",
            format!("missing; add `apiVersion: {API_VERSION}`"),
        ),
        Some(other) => c.problem(
            "apiVersion",
            format!("{other:?} is not supported; use {API_VERSION}"),
        ),
    }
    match kind {
        Some("Mesh") => {}
        None => c.problem("kind", "missing; add `kind: Mesh`"),
        Some(other) => c.problem(
            "kind",
            format!("{other:?} is not a mesh file kind; use Mesh"),
        ),
    }
    let mesh_id = mesh_id.unwrap_or_else(|| "mesh1".to_string());
    if !is_dns_label(&mesh_id) {
        c.problem(
            "meshID",
            format!("{mesh_id:?} must be a DNS label (lowercase letters, digits, '-')"),
        );
    } else if !is_yaml_plain(&mesh_id) {
        c.problem(
            "meshID",
            format!("{mesh_id:?} would read as a number, boolean or null in YAML; start it with a letter"),
        );
    }
    mesh_id
}

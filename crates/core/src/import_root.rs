//! `ca.importRoot`: the root a running mesh already trusts becomes meshtrust's first root generation, so
//! per-cluster intermediates are signed under the root every proxy trusts and nothing changes for them.
//!
//! A root whose key lived outside OpenBao (seed 001's bundle in KV, copied into every cluster) stays exposed
//! until the mesh has rotated to a root generated inside OpenBao. `plan` says so until that rotation has
//! finished, and only then offers to destroy the KV copy.

use crate::facts::{CertFacts, ImportFacts, Observed, RootIssuerFacts, root_issuer_name};
use crate::mesh::{ImportRoot, Mesh};
use crate::plan::{Action, Blocker, Change, Domain, Op, Plan, PlanOptions, Target};
use crate::rotation::{RotationPhase, RotationState};

/// The flag that lets `apply` destroy the imported root's KV copy.
pub const DESTROY_FLAG: &str = "--destroy-imported-key";

fn short(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

fn describe(cert: &CertFacts) -> String {
    format!(
        "\"{}\", sha256 {}",
        cert.subject_cn,
        short(&cert.fingerprint)
    )
}

/// OpenBao holds no meshtrust root yet: import the configured one (or generate one when nothing is to be
/// imported). False when no first root can be planned, so no intermediate may be either.
pub fn plan_first_root(mesh: &Mesh, observed: &Observed, plan: &mut Plan) -> bool {
    let Some(import) = &mesh.ca.import_root else {
        plan.changes.push(generate_first_root(mesh));
        return true;
    };
    let pki = &mesh.openbao.pki_mount;
    let (source, fix_missing) = match import {
        ImportRoot::KvPath(path) => (
            format!("KV {}/{path}", mesh.openbao.kv_mount),
            format!(
                "point ca.importRoot.kvPath at the bundle the clusters trust (`bao kv get {}/{path}` must show root-cert.pem and key.pem)",
                mesh.openbao.kv_mount
            ),
        ),
        ImportRoot::Issuer(reference) => (
            format!("PKI issuer {pki}/{reference}"),
            format!(
                "set ca.importRoot.issuer to the root's issuer name or ID as `bao list -detailed {pki}/issuers` shows it"
            ),
        ),
    };
    let mut block = |reason: String, fix: String| {
        plan.blockers.push(Blocker {
            domain: Domain::Trust,
            target: Target::OpenBao,
            resource: source.clone(),
            reason,
            fix,
        })
    };
    // Never fall back to a new root: every proxy would have to learn it first (a trust gap on a live mesh).
    match (&observed.openbao.import, import) {
        // Not looked at (an agent): only the admin imports.
        (None, _) => {}
        (Some(ImportFacts::Missing), _) => block(
            "ca.importRoot names it, but it does not exist; meshtrust will not make a new root instead, which every proxy would first have to trust".into(),
            fix_missing,
        ),
        (Some(ImportFacts::Invalid { problems }), _) => block(
            format!("cannot be the mesh's root: {}", problems.join("; ")),
            "fix the bundle (the root certificate the clusters trust and its private key) or point ca.importRoot at the right one".into(),
        ),
        (Some(ImportFacts::Ready { cert }), ImportRoot::KvPath(path)) => {
            plan.changes.push(Change {
                target: Target::OpenBao,
                op: Op::Create,
                resource: format!("root CA issuer {pki}/{}", root_issuer_name(1)),
                summary: format!(
                    "imported from KV {}/{path}: the root every cluster trusts now ({}); its key moves into the PKI engine",
                    mesh.openbao.kv_mount,
                    describe(cert)
                ),
                reason: "ca.importRoot.kvPath: intermediates are then signed under the root proxies already trust, so no proxy sees a new root".into(),
                action: Action::ImportRoot {
                    mount: pki.clone(),
                    kv_path: path.clone(),
                },
            });
            return true;
        }
        // An issuer that is ready is observed as generation 1 already; nothing to do here.
        (Some(ImportFacts::Ready { .. }), ImportRoot::Issuer(_)) => {}
    }
    false
}

fn generate_first_root(mesh: &Mesh) -> Change {
    let mount = &mesh.openbao.pki_mount;
    Change {
        target: Target::OpenBao,
        op: Op::Create,
        resource: format!("root CA issuer {mount}/{}", root_issuer_name(1)),
        summary: format!(
            "internal root \"{}\", {}, ttl {} (the key never leaves OpenBao)",
            mesh.ca.root.common_name, mesh.ca.root.key, mesh.ca.root.ttl
        ),
        reason: "the PKI mount holds no meshtrust root yet".into(),
        action: Action::GenerateRoot {
            mount: mount.clone(),
            generation: 1,
        },
    }
}

/// Once roots exist: what the import means now, the warning while the imported key is still the mesh's, and
/// the KV copy's destruction once a rotation to a root generated inside OpenBao has finished.
pub fn plan_imported_root(
    mesh: &Mesh,
    observed: &Observed,
    rotation: &RotationState,
    options: PlanOptions,
    plan: &mut Plan,
) {
    let roots = &observed.openbao.roots;
    match (&mesh.ca.import_root, &observed.openbao.import) {
        (Some(ImportRoot::Issuer(reference)), _) => {
            if let Some(first) = roots.iter().find(|r| r.generation == 1) {
                plan.notes.push(format!(
                    "ca.importRoot.issuer: the PKI issuer {}/{reference} ({}) is meshtrust's root generation 1 (named {} in plans and status): intermediates are signed under it, so proxies keep the root they trust. meshtrust never renames, rewrites or deletes that issuer",
                    mesh.openbao.pki_mount,
                    describe(&first.cert),
                    root_issuer_name(1)
                ));
            }
        }
        (Some(ImportRoot::KvPath(path)), Some(ImportFacts::Ready { cert })) => {
            let kv = format!("KV {}/{path}", mesh.openbao.kv_mount);
            match roots
                .iter()
                .find(|r| r.cert.fingerprint == cert.fingerprint)
            {
                Some(imported) => {
                    plan_exposed_key(&kv, path, imported, rotation, options, plan);
                }
                None => plan.warnings.push(format!(
                    "{kv} holds a root ({}) that is none of meshtrust's roots: ca.importRoot.kvPath is used only while OpenBao holds no meshtrust root. If seed 001's istio-ca-bootstrap Job wrote it, remove that Job, and remove importRoot from the mesh file",
                    describe(cert)
                )),
            }
        }
        _ => {}
    }
}

/// The imported root's key was kept outside OpenBao: warn until the mesh has moved to a root generated inside
/// OpenBao, then offer (or, with [`DESTROY_FLAG`], plan) destroying the KV copy.
fn plan_exposed_key(
    kv: &str,
    path: &str,
    imported: &RootIssuerFacts,
    rotation: &RotationState,
    options: PlanOptions,
    plan: &mut Plan,
) {
    let name = imported.issuer_name();
    let newest = root_issuer_name(rotation.newest);
    let retired = rotation.newest > imported.generation && rotation.phase == RotationPhase::Settled;
    if !retired {
        let state = if rotation.newest > imported.generation {
            format!(
                "the rotation to {newest} is under way; the KV copy stays until every cluster trusts and signs with {newest} only"
            )
        } else {
            "rotate to a root generated inside OpenBao: `meshtrust ca rotate-root` (the agents, or --wait, carry it through its three phases)".into()
        };
        plan.warnings.push(format!(
            "the key of {name} (imported from {kv}) has lived outside OpenBao: in KV and, under seed 001's setup, in every cluster's cacerts. {state}. Then `meshtrust apply {DESTROY_FLAG}` destroys the KV copy"
        ));
        if options.destroy_imported_key {
            plan.warnings.push(format!(
                "{DESTROY_FLAG}: not yet: {kv} is destroyed only once every cluster trusts and signs with a root generated inside OpenBao only"
            ));
        }
        return;
    }
    if !options.destroy_imported_key {
        plan.warnings.push(format!(
            "the key of {name} is still in {kv} (every version). No cluster trusts {name} any more (every cluster trusts and signs with {newest} only), so nothing needs it: destroy it with `meshtrust apply {DESTROY_FLAG}`. First remove seed 001's istio-ca-bootstrap Job and any ExternalSecret reading it: the Job writes a new bundle there when it finds none"
        ));
        return;
    }
    plan.changes.push(Change {
        target: Target::OpenBao,
        op: Op::Delete,
        resource: kv.to_string(),
        summary: format!(
            "every version and the metadata of the bundle {name} was imported from (its root key included)"
        ),
        reason: format!(
            "{DESTROY_FLAG}: every cluster trusts and signs with {newest} only, generated inside OpenBao; {name} is trusted nowhere"
        ),
        action: Action::DestroyImportedKey {
            kv_path: path.to_string(),
        },
    });
}

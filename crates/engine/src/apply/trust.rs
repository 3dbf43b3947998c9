//! Applying trust: the PKI mount, roots inside OpenBao (or the shared root in KV), the Istio namespace, and
//! every cluster's `cacerts`. A bundle is checked the way istiod checks it before it is written, and the key of
//! an intermediate is made here and never leaves this process except into the cluster's Secret.

use std::collections::BTreeMap;

use meshtrust_core::facts::CacertsFacts;
use meshtrust_core::mesh::{ClusterSettings, Mesh};
use meshtrust_core::plan::Action;
use meshtrust_core::ports::{ErrorKind, GenerateOutcome, RootRequest, SecretObject, SignRequest};
use meshtrust_pki::cacerts::{CacertsBundle, inspect};
use meshtrust_pki::import::ImportBundle;
use meshtrust_pki::shared_root::SharedRoot;
use meshtrust_pki::{PrivateKeyPem, generate_key, intermediate_csr, parse_certs};

use super::{RunState, Targets};
use crate::EngineError;
use crate::names::{
    CACERTS, FORMAT_ANNOTATION, FORMAT_VERSION, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ROOTS_ANNOTATION, SERIAL_ANNOTATION, root_issuer_name,
};
use crate::observe::observe_roots;

/// What OpenBao is asked for when it generates root `generation` for this mesh.
pub fn root_request(mesh: &Mesh, generation: u32) -> RootRequest {
    RootRequest {
        issuer_name: root_issuer_name(generation),
        // Old and new roots must differ in subject, so people (and tools) can tell them apart.
        common_name: if generation > 1 {
            format!("{} G{generation}", mesh.ca.root.common_name)
        } else {
            mesh.ca.root.common_name.clone()
        },
        organization: mesh.ca.root.organization.clone(),
        key: mesh.ca.root.key,
        ttl: mesh.ca.root.ttl,
    }
}

pub(super) async fn apply(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    action: &Action,
) -> Result<String, EngineError> {
    let bao = targets.bao;
    match action {
        Action::EnablePkiMount {
            mount,
            max_lease_ttl,
        } => {
            // Another apply may have mounted it a moment ago; that is fine if it is a PKI mount now.
            if let Err(e) = bao.enable_mount(mount, "pki", Some(*max_lease_ttl)).await
                && bao.mount(mount).await?.is_none_or(|m| m.kind != "pki")
            {
                return Err(e.into());
            }
            Ok(format!("mounted pki at {mount}/ (max TTL {max_lease_ttl})"))
        }
        Action::TunePkiMount {
            mount,
            max_lease_ttl,
        } => {
            bao.tune_mount(mount, *max_lease_ttl).await?;
            Ok(format!("max lease TTL of {mount}/ is now {max_lease_ttl}"))
        }
        Action::GenerateRoot { mount, generation } => {
            generate_root(targets, run, mount, *generation).await
        }
        Action::CreateSharedRoot { kv_path } => create_shared_root(targets, run, kv_path).await,
        Action::ImportRoot { mount, kv_path } => import_root(targets, run, mount, kv_path).await,
        Action::DestroyImportedKey { kv_path } => {
            let kv = &targets.mesh.openbao.kv_mount;
            targets.bao.kv_delete(kv, kv_path).await?;
            Ok(format!(
                "destroyed every version and the metadata of {kv}/{kv_path}"
            ))
        }
        Action::PublishTrustFacts { cluster, facts } => {
            crate::trust_facts::publish(bao, targets.mesh, run.snapshot(), cluster, facts).await
        }
        Action::CreateNamespace { cluster, namespace } => {
            let settings = targets.settings(cluster)?;
            let labels = BTreeMap::from([(
                "topology.istio.io/network".to_string(),
                settings.network.clone(),
            )]);
            targets
                .cluster(cluster)?
                .create_namespace(namespace, &labels)
                .await?;
            Ok(format!("created namespace {namespace}"))
        }
        Action::IssueIntermediate {
            cluster,
            signing,
            trust,
            keep,
            ..
        } => {
            let roots = Roots { trust, keep };
            issue_intermediate(targets, run, cluster, *signing, roots).await
        }
        Action::UpdateTrustBundle {
            cluster,
            trust,
            keep,
        } => update_trust_bundle(targets, run, cluster, Roots { trust, keep }).await,
        Action::WriteSharedRoot { cluster, .. } => write_shared_root(targets, run, cluster).await,
        other => Err(EngineError::Inconsistent(format!(
            "{other:?} is not a trust change"
        ))),
    }
}

async fn generate_root(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    mount: &str,
    generation: u32,
) -> Result<String, EngineError> {
    let request = root_request(targets.mesh, generation);
    let outcome = targets.bao.generate_root(mount, &request).await?;
    let found = observe_roots(targets.bao, targets.mesh, run.snapshot().facts.now).await?;
    run.roots_pem = Some(found.pems);
    let root = found
        .roots
        .iter()
        .find(|r| r.generation == generation)
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "OpenBao reported {} but does not list it",
                request.issuer_name
            ))
        })?;
    Ok(match outcome {
        GenerateOutcome::Created => format!(
            "generated {} inside OpenBao (serial {}, sha256 {})",
            request.issuer_name, root.cert.serial, root.cert.fingerprint
        ),
        GenerateOutcome::AlreadyExists => format!(
            "{} was created concurrently by another run; using it (serial {})",
            request.issuer_name, root.cert.serial
        ),
    })
}

/// `ca.importRoot.kvPath`: the KV bundle, checked again as read, goes into the PKI mount as
/// `meshtrust-root-1`; from then on the key lives in the engine.
async fn import_root(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    mount: &str,
    kv_path: &str,
) -> Result<String, EngineError> {
    let source = format!("KV {}/{kv_path}", targets.mesh.openbao.kv_mount);
    let entry = run.snapshot().import_bundle.as_ref().ok_or_else(|| {
        EngineError::Inconsistent(format!("{source} was not read; run apply again"))
    })?;
    let bundle = ImportBundle::from_kv(&entry.data, &source, run.snapshot().facts.now)
        .map_err(|problems| EngineError::Inconsistent(problems.join("; ")))?;
    let name = root_issuer_name(1);
    let outcome = targets
        .bao
        .import_root(mount, &bundle.pem_bundle(), &name)
        .await?;
    let found = observe_roots(targets.bao, targets.mesh, run.snapshot().facts.now).await?;
    if !found
        .roots
        .iter()
        .any(|r| r.generation == 1 && r.cert.fingerprint == bundle.cert.facts.fingerprint)
    {
        return Err(EngineError::Inconsistent(format!(
            "OpenBao reported importing {source} as {name} but does not list it so"
        )));
    }
    run.roots_pem = Some(found.pems);
    Ok(match outcome {
        GenerateOutcome::Created => format!(
            "imported {source} into {mount} as {name} (sha256 {}); its key now lives in the PKI engine",
            bundle.cert.facts.fingerprint
        ),
        GenerateOutcome::AlreadyExists => {
            format!("{source} was imported as {name} already (by another run); using it")
        }
    })
}

async fn create_shared_root(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    kv_path: &str,
) -> Result<String, EngineError> {
    let mesh = targets.mesh;
    let root = SharedRoot::generate(&mesh.ca.root, run.snapshot().facts.now)
        .map_err(EngineError::pki("generating the shared root"))?;
    let kv = &mesh.openbao.kv_mount;
    let detail = match targets.bao.kv_put(kv, kv_path, &root.to_kv(), 0).await {
        Ok(version) => format!(
            "stored the shared root at {kv}/{kv_path} version {version} (sha256 {})",
            fingerprint(&root.cert_pem)?
        ),
        Err(e) if e.kind == ErrorKind::Conflict => {
            format!("{kv}/{kv_path} was created concurrently by another run; using it")
        }
        Err(e) => return Err(e.into()),
    };
    run.shared_root = targets.bao.kv_get(kv, kv_path).await?;
    Ok(detail)
}

/// The roots a new `root-cert.pem` holds: OpenBao's generations `trust`, and the `keep` roots (by fingerprint,
/// held by no OpenBao issuer) taken from the bundle being replaced.
#[derive(Clone, Copy)]
struct Roots<'a> {
    trust: &'a [u32],
    keep: &'a [String],
}

async fn issue_intermediate(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    cluster: &str,
    signing: u32,
    roots: Roots<'_>,
) -> Result<String, EngineError> {
    let mesh = targets.mesh;
    let settings = targets.settings(cluster)?;
    let key = generate_key(mesh.ca.intermediate.key)
        .map_err(EngineError::pki("generating the intermediate key"))?;
    let common_name = settings.intermediate_common_name(&mesh.mesh_id);
    let csr = intermediate_csr(&key, &common_name, &mesh.ca.intermediate.organization)
        .map_err(EngineError::pki("building the CSR"))?;
    let request = SignRequest {
        csr_pem: csr,
        common_name,
        organization: mesh.ca.intermediate.organization.clone(),
        ttl: mesh.ca.intermediate.ttl,
    };
    let signed = targets
        .bao
        .sign_intermediate(
            &mesh.openbao.pki_mount,
            &mesh.ca.issuer_ref(signing),
            &request,
        )
        .await?;
    let issuer_pem = run.root_pem(signing)?;
    let bundle = bundle(run, cluster, signed.certificate_pem, key, issuer_pem, roots)?;
    write_cacerts(targets, run, settings, &bundle).await?;
    Ok(format!(
        "intermediate serial {} signed by {}",
        signed.serial,
        root_issuer_name(signing)
    ))
}

async fn update_trust_bundle(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    cluster: &str,
    roots: Roots<'_>,
) -> Result<String, EngineError> {
    let settings = targets.settings(cluster)?;
    let existing = run.cacerts(cluster).ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "cluster {cluster}: cacerts vanished while planning; run apply again"
        ))
    })?;
    let (ca_cert_pem, ca_key) =
        CacertsBundle::existing_signer(&existing.data).ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "cluster {cluster}: cannot read the intermediate back from cacerts"
            ))
        })?;
    let issuer_pem = existing_issuer_pem(run, cluster, &existing.data)?;
    let bundle = bundle(run, cluster, ca_cert_pem, ca_key, issuer_pem, roots)?;
    write_cacerts(targets, run, settings, &bundle).await?;
    let names: Vec<String> = roots
        .keep
        .iter()
        .map(|fp| format!("kept root sha256 {}", fp.get(..16).unwrap_or(fp)))
        .chain(roots.trust.iter().map(|g| root_issuer_name(*g)))
        .collect();
    Ok(format!("root-cert.pem now trusts {}", names.join(" + ")))
}

/// The certificate of the root that signed a kept intermediate: OpenBao's, or, for a root OpenBao does not
/// hold (restored from an older snapshot), the one in the bundle itself.
fn existing_issuer_pem(
    run: &RunState<'_>,
    cluster: &str,
    data: &BTreeMap<String, meshtrust_core::secret::SecretBytes>,
) -> Result<String, EngineError> {
    let facts = &run.snapshot().facts;
    let issuer = match facts.clusters.get(cluster).map(|f| &f.cacerts) {
        Some(CacertsFacts::Managed(state)) => state.issuer_fingerprint.clone(),
        _ => None,
    }
    .ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "cluster {cluster}: the intermediate's root is unknown"
        ))
    })?;
    if let Some(root) = facts.openbao.root_by_fingerprint(&issuer) {
        return run.root_pem(root.generation);
    }
    CacertsBundle::existing_roots(data)
        .into_iter()
        .find(|(fp, _)| *fp == issuer)
        .map(|(_, pem)| pem)
        .ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "cluster {cluster}: the intermediate's root (sha256 {issuer}) is neither in OpenBao nor in root-cert.pem"
            ))
        })
}

async fn write_shared_root(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    cluster: &str,
) -> Result<String, EngineError> {
    let mesh = targets.mesh;
    let settings = targets.settings(cluster)?;
    let entry = run.shared_root().ok_or_else(|| {
        EngineError::Inconsistent("the shared root is not in KV; run apply again".into())
    })?;
    let root = SharedRoot::from_kv(&entry.data).ok_or_else(|| {
        EngineError::Inconsistent(format!(
            "KV {}/{} lacks root-cert.pem or key.pem",
            mesh.openbao.kv_mount, mesh.ca.shared_root_kv_path
        ))
    })?;
    let bundle = CacertsBundle {
        ca_cert_pem: root.cert_pem.clone(),
        ca_key: root.key.clone(),
        issuer_pem: root.cert_pem.clone(),
        trusted_roots_pem: vec![root.cert_pem.clone()],
    };
    write_cacerts(targets, run, settings, &bundle).await?;
    Ok(format!(
        "shared root (sha256 {}) written as the cluster's CA",
        fingerprint(&root.cert_pem)?
    ))
}

/// A bundle for an intermediate signed by `issuer_pem`, trusting `roots`.
fn bundle(
    run: &RunState<'_>,
    cluster: &str,
    ca_cert_pem: String,
    ca_key: PrivateKeyPem,
    issuer_pem: String,
    roots: Roots<'_>,
) -> Result<CacertsBundle, EngineError> {
    Ok(CacertsBundle {
        ca_cert_pem,
        ca_key,
        issuer_pem,
        trusted_roots_pem: trusted_roots_pem(run, cluster, roots)?,
    })
}

/// The new `root-cert.pem`: the roots of the current file that stay, in the file's order (istiod 1.20-1.30
/// accepts a new root file only if it contains the old one's bytes), then OpenBao's roots it lacks, oldest
/// first. Kept roots OpenBao does not hold come from the current file; one that is missing there is an error.
fn trusted_roots_pem(
    run: &RunState<'_>,
    cluster: &str,
    roots: Roots<'_>,
) -> Result<Vec<String>, EngineError> {
    let wanted: Vec<(String, String)> = roots
        .trust
        .iter()
        .map(|g| {
            let pem = run.root_pem(*g)?;
            Ok((fingerprint(&pem)?, pem))
        })
        .collect::<Result<_, EngineError>>()?;
    let current = run
        .cacerts(cluster)
        .map(|s| CacertsBundle::existing_roots(&s.data))
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for (fp, pem) in current {
        let stays = roots.keep.contains(&fp) || wanted.iter().any(|(w, _)| *w == fp);
        if stays && !out.iter().any(|(o, _)| *o == fp) {
            out.push((fp, pem));
        }
    }
    if let Some(missing) = roots
        .keep
        .iter()
        .find(|k| !out.iter().any(|(o, _)| o == *k))
    {
        return Err(EngineError::Inconsistent(format!(
            "cluster {cluster}: the root sha256 {missing} to keep is no longer in its root-cert.pem; run apply again"
        )));
    }
    for (fp, pem) in wanted {
        if !out.iter().any(|(o, _)| *o == fp) {
            out.push((fp, pem));
        }
    }
    Ok(out.into_iter().map(|(_, pem)| pem).collect())
}

/// Writes `cacerts` only after checking it as istiod would; create-only if absent, else conditional on the
/// resourceVersion that was read, so a concurrent writer makes this fail instead of being overwritten.
async fn write_cacerts(
    targets: &Targets<'_>,
    run: &mut RunState<'_>,
    settings: &ClusterSettings,
    bundle: &CacertsBundle,
) -> Result<(), EngineError> {
    let data = bundle.to_secret_data(targets.mesh.ca.secret_format);
    let state = inspect(&data, run.snapshot().facts.now);
    if !state.problems.is_empty() {
        return Err(EngineError::Inconsistent(format!(
            "cluster {}: refusing to write a cacerts istiod would reject: {}",
            settings.name,
            state.problems.join("; ")
        )));
    }
    let existing = run.cacerts(&settings.name).cloned();
    let mut secret = existing.clone().unwrap_or_else(|| SecretObject {
        namespace: settings.istio_namespace.clone(),
        name: CACERTS.into(),
        ..Default::default()
    });
    // Handed over (the plan blocks while another controller owns it): its leftover marks go.
    meshtrust_core::handover::strip_marks(&mut secret);
    secret
        .labels
        .insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    if let Some(cert) = &state.ca_cert {
        secret
            .annotations
            .insert(SERIAL_ANNOTATION.into(), cert.serial.clone());
    }
    secret
        .annotations
        .insert(ROOTS_ANNOTATION.into(), state.trusted_roots.join(","));
    secret
        .annotations
        .insert(FORMAT_ANNOTATION.into(), FORMAT_VERSION.to_string());
    secret.data = data;
    // An existing Secret (also one taken over with --adopt) keeps its type: Kubernetes refuses to change it.
    let cluster = targets.cluster(&settings.name)?;
    let written = if existing.is_some() {
        cluster.replace_secret(&secret).await?
    } else {
        cluster.create_secret(&secret).await?
    };
    run.cacerts.insert(settings.name.clone(), written);
    Ok(())
}

fn fingerprint(pem: &str) -> Result<String, EngineError> {
    let certs = parse_certs(pem, "certificate").map_err(EngineError::pki("fingerprinting"))?;
    Ok(certs[0].facts.fingerprint.clone())
}

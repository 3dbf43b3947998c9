//! Executing a plan, change by change, in order. Every write is conditional (create-only, resourceVersion,
//! check-and-set), every bundle is checked the way istiod checks it before it is written, and a change that
//! loses a race surfaces as a conflict so that the caller can observe and plan again.

use std::collections::BTreeMap;

use meshtrust_core::bao_plan::{AGENT_ROLE, desired_host, desired_role};
use meshtrust_core::facts::{CacertsFacts, root_issuer_name};
use meshtrust_core::mesh::ClusterSettings;
use meshtrust_core::plan::{Action, Change, Plan};
use meshtrust_core::policy::{ADMIN_POLICY, admin_policy, agent_policy, agent_policy_name};
use meshtrust_core::ports::{
    ErrorKind, GenerateOutcome, OpenBao, RootRequest, SecretObject, SignRequest,
};
use meshtrust_pki::cacerts::{CacertsBundle, inspect};
use meshtrust_pki::shared_root::SharedRoot;
use meshtrust_pki::{generate_key, intermediate_csr, parse_certs};
use serde::Serialize;
use serde_json::json;

use crate::observe::{Observation, observe_roots};
use crate::remote;
use crate::run::Engine;
use crate::{CACERTS, EngineError, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

#[derive(Debug, Clone, Serialize)]
pub struct AppliedChange {
    pub resource: String,
    pub target: String,
    /// What was done, with serials and fingerprints (never key material).
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub applied: Vec<AppliedChange>,
    pub warnings: Vec<String>,
}

pub const SERIAL_ANNOTATION: &str = "meshtrust.dev/ca-serial";
pub const ROOTS_ANNOTATION: &str = "meshtrust.dev/root-fingerprints";

impl Engine {
    /// Applies `plan`, made from `observation`. `progress` hears about each change as it completes.
    pub async fn apply(
        &self,
        plan: &Plan,
        observation: &Observation,
        progress: &mut (dyn FnMut(&Change, &AppliedChange) + Send),
    ) -> Result<ApplyReport, EngineError> {
        if !plan.blockers.is_empty() {
            return Err(EngineError::Blocked(plan.blockers.clone()));
        }
        let mut material = observation.clone();
        let mut report = ApplyReport {
            applied: vec![],
            warnings: plan.warnings.clone(),
        };
        for change in &plan.changes {
            let detail = self.apply_one(&change.action, &mut material).await?;
            let applied = AppliedChange {
                resource: change.resource.clone(),
                target: change.target.to_string(),
                detail,
            };
            progress(change, &applied);
            report.applied.push(applied);
        }
        Ok(report)
    }

    async fn apply_one(
        &self,
        action: &Action,
        material: &mut Observation,
    ) -> Result<String, EngineError> {
        let mesh = &self.mesh;
        let bao: &dyn OpenBao = self.bao.as_ref();
        match action {
            Action::EnsureReader { cluster } => {
                let settings = self.settings(cluster)?;
                let found = material.readers.get(cluster).cloned().unwrap_or_default();
                remote::ensure_reader(self.cluster(cluster)?.as_ref(), settings, &found).await
            }
            Action::PublishRemoteSecret { cluster } => {
                let settings = self.settings(cluster)?;
                let (kubeconfig, version, expires) =
                    remote::publish(bao, mesh, self.cluster(cluster)?.as_ref(), settings).await?;
                material
                    .published_now
                    .insert(cluster.clone(), (kubeconfig, version));
                Ok(format!(
                    "published version {version}; the reader token expires at {expires} (Unix time)"
                ))
            }
            Action::SyncRemoteSecret { cluster, peer } => {
                let settings = self.settings(cluster)?;
                let (kubeconfig, version) = match material.published_now.get(peer) {
                    Some(fresh) => fresh.clone(),
                    None => remote::fetch(bao, mesh, peer).await?,
                };
                let existing = material
                    .remote_secrets
                    .get(cluster)
                    .and_then(|m| m.get(peer));
                let secret = remote::remote_secret(settings, peer, kubeconfig, version, existing);
                let target = self.cluster(cluster)?;
                if existing.is_some() {
                    target.replace_secret(&secret).await?;
                } else {
                    target.create_secret(&secret).await?;
                }
                Ok(format!("{} from KV version {version}", secret.name))
            }
            Action::DeleteRemoteSecret { cluster, peer } => {
                let settings = self.settings(cluster)?;
                let existing = material.remote_secrets.get(cluster).and_then(|m| m.get(peer)).ok_or_else(|| {
                    EngineError::Inconsistent(format!("cluster {cluster}: the remote secret for {peer} vanished; run apply again"))
                })?;
                let rv = existing.resource_version.clone().unwrap_or_default();
                self.cluster(cluster)?
                    .delete_secret(&settings.istio_namespace, &existing.name, &rv)
                    .await?;
                Ok(format!("deleted {}", existing.name))
            }
            Action::UnpublishRemoteSecret { cluster } => {
                remote::unpublish(bao, mesh, cluster).await?;
                Ok(format!("removed {cluster} from the index and KV"))
            }
            Action::CreateBaoNamespace { namespace } => {
                if let Err(e) = bao.create_namespace(namespace).await {
                    // A concurrent apply may have created it a moment ago.
                    if !bao.namespace_exists(namespace).await? {
                        return Err(e.into());
                    }
                }
                Ok(format!("created OpenBao namespace {namespace}"))
            }
            Action::EnableKvMount { mount } => {
                if let Err(e) = bao.enable_mount(mount, "kv", None).await {
                    match bao.mount(mount).await? {
                        Some(m) if m.kind == "kv" => {}
                        _ => return Err(e.into()),
                    }
                }
                Ok(format!("mounted KV v2 at {mount}/"))
            }
            Action::EnableAuthMount { mount, .. } => {
                if let Err(e) = bao.enable_auth(mount, "kubernetes").await
                    && bao.auth_mount(mount).await?.as_deref() != Some("kubernetes")
                {
                    return Err(e.into());
                }
                Ok(format!("enabled Kubernetes auth at auth/{mount}/"))
            }
            Action::ConfigureAuth { cluster, mount } => {
                let settings = self.settings(cluster)?;
                let api = material
                    .facts
                    .clusters
                    .get(cluster)
                    .map(|c| c.api.clone())
                    .unwrap_or_default();
                let host = desired_host(settings, &api.server);
                let ca = api.ca_pem.ok_or_else(|| {
                    EngineError::Inconsistent(format!(
                        "cluster {cluster}: its kubeconfig has no certificate-authority-data, so OpenBao cannot verify the API server; add it to the kubeconfig"
                    ))
                })?;
                // No token_reviewer_jwt: OpenBao reviews each login JWT with itself, so no long-lived reviewer
                // token is stored (the agent's ServiceAccount needs system:auth-delegator instead).
                let body = json!({ "kubernetes_host": host, "kubernetes_ca_cert": ca, "disable_local_ca_jwt": true });
                bao.write(&format!("auth/{mount}/config"), &body).await?;
                Ok(format!("auth/{mount} reviews tokens at {host}"))
            }
            Action::WriteAgentRole { cluster, mount } => {
                let role = desired_role(mesh, self.settings(cluster)?);
                let body = json!({
                    "bound_service_account_names": role.service_account_names,
                    "bound_service_account_namespaces": role.service_account_namespaces,
                    "token_policies": role.policies,
                    "token_ttl": role.token_ttl,
                });
                bao.write(&format!("auth/{mount}/role/{AGENT_ROLE}"), &body)
                    .await?;
                Ok(format!(
                    "role {AGENT_ROLE} grants {}",
                    role.policies.join(", ")
                ))
            }
            Action::WritePolicy { name } => {
                let text = if name == ADMIN_POLICY {
                    admin_policy(mesh)
                } else {
                    let cluster = mesh
                        .clusters
                        .iter()
                        .find(|c| agent_policy_name(&c.name) == *name)
                        .ok_or_else(|| {
                            EngineError::Inconsistent(format!(
                                "policy {name} belongs to no cluster of the mesh file"
                            ))
                        })?;
                    agent_policy(mesh, cluster)
                };
                bao.write_policy(name, &text).await?;
                Ok(format!("wrote policy {name}"))
            }
            Action::EnablePkiMount {
                mount,
                max_lease_ttl,
            } => {
                if let Err(e) = bao.enable_mount(mount, "pki", Some(*max_lease_ttl)).await {
                    // Another apply may have mounted it a moment ago; that is fine if it is a PKI mount now.
                    match bao.mount(mount).await? {
                        Some(m) if m.kind == "pki" => {}
                        _ => return Err(e.into()),
                    }
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
                let request = RootRequest {
                    issuer_name: root_issuer_name(*generation),
                    common_name: mesh.ca.root.common_name.clone(),
                    organization: mesh.ca.root.organization.clone(),
                    key: mesh.ca.root.key,
                    ttl: mesh.ca.root.ttl,
                };
                let outcome = bao.generate_root(mount, &request).await?;
                let (roots, _, pems) = observe_roots(bao, mount).await?;
                material.roots_pem = pems;
                let root = roots
                    .iter()
                    .find(|r| r.generation == *generation)
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
                    GenerateOutcome::AlreadyExists => {
                        format!(
                            "{} was created concurrently by another run; using it (serial {})",
                            request.issuer_name, root.cert.serial
                        )
                    }
                })
            }
            Action::CreateSharedRoot { kv_path } => {
                let root = SharedRoot::generate(&mesh.ca.root, material.facts.now)
                    .map_err(EngineError::pki("generating the shared root"))?;
                let kv = &mesh.openbao.kv_mount;
                match bao.kv_put(kv, kv_path, &root.to_kv(), 0).await {
                    Ok(version) => {
                        material.shared_root = bao.kv_get(kv, kv_path).await?;
                        let fp = fingerprint(&root.cert_pem)?;
                        Ok(format!(
                            "stored the shared root at {kv}/{kv_path} version {version} (sha256 {fp})"
                        ))
                    }
                    Err(e) if e.kind == ErrorKind::Conflict => {
                        material.shared_root = bao.kv_get(kv, kv_path).await?;
                        Ok(format!(
                            "{kv}/{kv_path} was created concurrently by another run; using it"
                        ))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Action::CreateNamespace { cluster, namespace } => {
                let settings = self.settings(cluster)?;
                let labels = BTreeMap::from([(
                    "topology.istio.io/network".to_string(),
                    settings.network.clone(),
                )]);
                self.cluster(cluster)?
                    .create_namespace(namespace, &labels)
                    .await?;
                Ok(format!("created namespace {namespace}"))
            }
            Action::IssueIntermediate {
                cluster,
                signing,
                trust,
                ..
            } => {
                let settings = self.settings(cluster)?;
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
                let signed = bao
                    .sign_intermediate(
                        &mesh.openbao.pki_mount,
                        &root_issuer_name(*signing),
                        &request,
                    )
                    .await?;
                let bundle = CacertsBundle {
                    ca_cert_pem: signed.certificate_pem,
                    ca_key: key,
                    issuer_pem: self.root_pem(material, *signing)?,
                    trusted_roots_pem: trust
                        .iter()
                        .map(|g| self.root_pem(material, *g))
                        .collect::<Result<_, _>>()?,
                };
                self.write_cacerts(settings, &bundle, material).await?;
                Ok(format!(
                    "intermediate serial {} signed by {}",
                    signed.serial,
                    root_issuer_name(*signing)
                ))
            }
            Action::UpdateTrustBundle { cluster, trust } => {
                let settings = self.settings(cluster)?;
                let existing = material
                    .cacerts
                    .get(cluster)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| {
                        EngineError::Inconsistent(format!(
                            "cluster {cluster}: cacerts vanished while planning; run apply again"
                        ))
                    })?;
                let (ca_cert_pem, ca_key) = CacertsBundle::existing_signer(&existing.data)
                    .ok_or_else(|| {
                        EngineError::Inconsistent(format!(
                            "cluster {cluster}: cannot read the intermediate back from cacerts"
                        ))
                    })?;
                let issuer_fp = match &material.facts.clusters.get(cluster).map(|f| &f.cacerts) {
                    Some(CacertsFacts::Managed(state)) => state.issuer_fingerprint.clone(),
                    _ => None,
                };
                let issuer = issuer_fp
                    .and_then(|fp| {
                        material
                            .facts
                            .openbao
                            .root_by_fingerprint(&fp)
                            .map(|r| r.generation)
                    })
                    .ok_or_else(|| {
                        EngineError::Inconsistent(format!(
                            "cluster {cluster}: the intermediate's root is unknown"
                        ))
                    })?;
                let bundle = CacertsBundle {
                    ca_cert_pem,
                    ca_key,
                    issuer_pem: self.root_pem(material, issuer)?,
                    trusted_roots_pem: trust
                        .iter()
                        .map(|g| self.root_pem(material, *g))
                        .collect::<Result<_, _>>()?,
                };
                self.write_cacerts(settings, &bundle, material).await?;
                let names: Vec<String> = trust.iter().map(|g| root_issuer_name(*g)).collect();
                Ok(format!("root-cert.pem now trusts {}", names.join(" + ")))
            }
            Action::WriteSharedRoot { cluster, .. } => {
                let settings = self.settings(cluster)?;
                let entry = material.shared_root.as_ref().ok_or_else(|| {
                    EngineError::Inconsistent(
                        "the shared root is not in KV; run apply again".into(),
                    )
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
                self.write_cacerts(settings, &bundle, material).await?;
                Ok(format!(
                    "shared root (sha256 {}) written as the cluster's CA",
                    fingerprint(&root.cert_pem)?
                ))
            }
        }
    }

    fn root_pem(&self, material: &Observation, generation: u32) -> Result<String, EngineError> {
        material.roots_pem.get(&generation).cloned().ok_or_else(|| {
            EngineError::Inconsistent(format!(
                "{} is not in OpenBao; run plan again",
                root_issuer_name(generation)
            ))
        })
    }

    fn settings(&self, cluster: &str) -> Result<&ClusterSettings, EngineError> {
        self.mesh
            .cluster(cluster)
            .ok_or_else(|| EngineError::UnknownCluster(cluster.to_string()))
    }

    /// Writes `cacerts` only after checking it as istiod would; create-only if absent, else conditional on the
    /// resourceVersion that was read, so a concurrent writer makes this fail instead of being overwritten.
    async fn write_cacerts(
        &self,
        settings: &ClusterSettings,
        bundle: &CacertsBundle,
        material: &mut Observation,
    ) -> Result<(), EngineError> {
        let data = bundle.to_secret_data(self.mesh.ca.secret_format);
        let state = inspect(&data, material.facts.now);
        if !state.problems.is_empty() {
            return Err(EngineError::Inconsistent(format!(
                "cluster {}: refusing to write a cacerts istiod would reject: {}",
                settings.name,
                state.problems.join("; ")
            )));
        }
        let existing = material.cacerts.get(&settings.name).cloned().flatten();
        let mut secret = existing.clone().unwrap_or_else(|| SecretObject {
            namespace: settings.istio_namespace.clone(),
            name: CACERTS.into(),
            ..Default::default()
        });
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
        secret.data = data;
        secret.type_ = None;
        let cluster = self.cluster(&settings.name)?;
        let written = if existing.is_some() {
            cluster.replace_secret(&secret).await?
        } else {
            cluster.create_secret(&secret).await?
        };
        material
            .cacerts
            .insert(settings.name.clone(), Some(written));
        Ok(())
    }
}

fn fingerprint(pem: &str) -> Result<String, EngineError> {
    Ok(
        parse_certs(pem, "certificate").map_err(EngineError::pki("fingerprinting"))?[0]
            .facts
            .fingerprint
            .clone(),
    )
}

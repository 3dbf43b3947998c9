//! The core's `Cluster` port over kube-rs. Writes are conditional: create fails if the object exists,
//! replace and delete carry the resourceVersion that was read.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use meshtrust_core::ports::{
    BoundToken, Cluster, CustomKind, ErrorKind, KubeObject, ObjectBody, ObjectKind, OwnerRef,
    PortError, PortResult, SecretObject, System,
};
use meshtrust_core::secret::SecretBytes;

use crate::KubeCluster;
use crate::rbac;

impl KubeCluster {
    fn error(&self, operation: &str, e: kube::Error) -> PortError {
        let (kind, message) = match &e {
            kube::Error::Api(status) => {
                let kind = match status.code {
                    409 => ErrorKind::Conflict,
                    401 | 403 => ErrorKind::Denied,
                    404 => ErrorKind::NotFound,
                    c if c >= 500 => ErrorKind::Unavailable,
                    _ => ErrorKind::Invalid,
                };
                (kind, format!("{} ({})", status.message, status.code))
            }
            other => (
                ErrorKind::Unavailable,
                format!(
                    "cannot reach the API server at {}: {}",
                    self.server,
                    crate::describe::transport(other)
                ),
            ),
        };
        PortError::new(System::Cluster(self.name.clone()), kind, operation, message)
    }
}

fn to_object(secret: Secret) -> SecretObject {
    let meta = secret.metadata;
    SecretObject {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        data: secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, SecretBytes::new(v.0)))
            .collect(),
        type_: secret.type_,
        resource_version: meta.resource_version,
        owner_references: meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|o| OwnerRef {
                api_version: o.api_version,
                kind: o.kind,
                name: o.name,
            })
            .collect(),
    }
}

fn to_secret(object: &SecretObject) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(object.name.clone()),
            namespace: Some(object.namespace.clone()),
            labels: Some(object.labels.clone()).filter(|l| !l.is_empty()),
            annotations: Some(object.annotations.clone()).filter(|a| !a.is_empty()),
            resource_version: object.resource_version.clone(),
            ..Default::default()
        },
        data: Some(
            object
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        type_: object.type_.clone(),
        ..Default::default()
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn server(&self) -> &str {
        &self.server
    }

    fn api_ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    async fn namespace_exists(&self, namespace: &str) -> PortResult<bool> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.get_opt(namespace)
            .await
            .map(|n| n.is_some())
            .map_err(|e| self.error(&format!("get namespace {namespace}"), e))
    }

    async fn create_namespace(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> PortResult<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.into()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            // Someone created it meanwhile: that is the state we wanted.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.error(&format!("create namespace {namespace}"), e)),
        }
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> PortResult<Option<SecretObject>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map(|s| s.map(to_object))
            .map_err(|e| self.error(&format!("get Secret {namespace}/{name}"), e))
    }

    async fn list_custom_objects(
        &self,
        kind: &CustomKind,
        namespace: &str,
    ) -> PortResult<Vec<serde_json::Value>> {
        let gvk = kube::api::GroupVersionKind::gvk(kind.group, kind.version, kind.kind);
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, kind.plural);
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let operation = format!("list {}.{} in {namespace}", kind.plural, kind.group);
        match api.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .map(|o| {
                    serde_json::to_value(o).map_err(|e| {
                        PortError::new(
                            System::Cluster(self.name.clone()),
                            ErrorKind::Invalid,
                            &operation,
                            e.to_string(),
                        )
                    })
                })
                .collect(),
            // The kind is not installed: nothing of that controller's here.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(vec![]),
            Err(e) => Err(self.error(&operation, e)),
        }
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> PortResult<Option<BTreeMap<String, String>>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map(|c| c.map(|c| c.data.unwrap_or_default()))
            .map_err(|e| self.error(&format!("get ConfigMap {namespace}/{name}"), e))
    }

    async fn create_secret(&self, secret: &SecretObject) -> PortResult<SecretObject> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        let mut object = to_secret(secret);
        object.metadata.resource_version = None;
        api.create(&PostParams::default(), &object)
            .await
            .map(to_object)
            .map_err(|e| {
                self.error(
                    &format!("create Secret {}/{}", secret.namespace, secret.name),
                    e,
                )
            })
    }

    async fn replace_secret(&self, secret: &SecretObject) -> PortResult<SecretObject> {
        let op = format!("replace Secret {}/{}", secret.namespace, secret.name);
        if secret.resource_version.is_none() {
            return Err(PortError::new(
                System::Cluster(self.name.clone()),
                ErrorKind::Invalid,
                op,
                "no resourceVersion to make the write conditional",
            ));
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        api.replace(&secret.name, &PostParams::default(), &to_secret(secret))
            .await
            .map(to_object)
            .map_err(|e| self.error(&op, e))
    }

    async fn list_secrets(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> PortResult<Vec<SecretObject>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default().labels(label_selector))
            .await
            .map_err(|e| self.error(&format!("list Secrets {namespace} -l {label_selector}"), e))?;
        Ok(list.items.into_iter().map(to_object).collect())
    }

    async fn list_secret_metadata(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> PortResult<Vec<SecretObject>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let op = format!("list Secrets {namespace} -l {label_selector} (metadata)");
        let list = api
            .list_metadata(&ListParams::default().labels(label_selector))
            .await
            .map_err(|e| self.error(&op, e))?;
        Ok(list
            .items
            .into_iter()
            .map(|partial| {
                to_object(Secret {
                    metadata: partial.metadata,
                    ..Default::default()
                })
            })
            .collect())
    }

    async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_seconds: i64,
    ) -> PortResult<BoundToken> {
        let op = format!("TokenRequest for ServiceAccount {namespace}/{service_account}");
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(ttl_seconds),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let issued = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| self.error(&op, e))?;
        let status = issued.status.ok_or_else(|| {
            PortError::new(
                System::Cluster(self.name.clone()),
                ErrorKind::Invalid,
                &op,
                "the answer has no status",
            )
        })?;
        Ok(BoundToken {
            token: SecretBytes::new(status.token.into_bytes()),
            expires: status.expiration_timestamp.0.as_second(),
        })
    }

    async fn get_object(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> PortResult<Option<KubeObject>> {
        let op = format!("get {kind} {name}");
        let client = self.client.clone();
        let found = match kind {
            ObjectKind::ServiceAccount => {
                let ns = namespace.unwrap_or("default");
                Api::<ServiceAccount>::namespaced(client, ns)
                    .get_opt(name)
                    .await
                    .map(|o| o.map(|o| to_kube_object(o.metadata, ObjectBody::ServiceAccount)))
            }
            ObjectKind::ClusterRole => Api::<ClusterRole>::all(client)
                .get_opt(name)
                .await
                .map(|o| o.map(|o| to_kube_object(o.metadata, rbac::role_body(o.rules)))),
            ObjectKind::ClusterRoleBinding => Api::<ClusterRoleBinding>::all(client)
                .get_opt(name)
                .await
                .map(|o| {
                    o.map(|o| {
                        to_kube_object(o.metadata, rbac::binding_body(o.role_ref, o.subjects))
                    })
                }),
        };
        found.map_err(|e| self.error(&op, e))
    }

    async fn put_object(&self, object: &KubeObject) -> PortResult<()> {
        let op = format!("write {} {}", object.body.kind(), object.name);
        let meta = ObjectMeta {
            name: Some(object.name.clone()),
            namespace: object.namespace.clone(),
            labels: Some(object.labels.clone()),
            resource_version: object.resource_version.clone(),
            ..Default::default()
        };
        let client = self.client.clone();
        let create = object.resource_version.is_none();
        let result = match &object.body {
            ObjectBody::ServiceAccount => {
                let ns = object.namespace.as_deref().unwrap_or("default");
                let sa = ServiceAccount {
                    metadata: meta,
                    ..Default::default()
                };
                create_or_replace(&Api::namespaced(client, ns), &object.name, &sa, create).await
            }
            ObjectBody::ClusterRole { rules } => {
                let role = ClusterRole {
                    metadata: meta,
                    rules: Some(rules.iter().map(rbac::to_policy_rule).collect()),
                    ..Default::default()
                };
                create_or_replace(&Api::all(client), &object.name, &role, create).await
            }
            ObjectBody::ClusterRoleBinding {
                cluster_role,
                subjects,
            } => {
                let binding = rbac::to_binding(meta, cluster_role, subjects);
                create_or_replace(&Api::all(client), &object.name, &binding, create).await
            }
        };
        result.map_err(|e| self.error(&op, e))
    }

    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> PortResult<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.into()),
                uid: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.error(&format!("delete Secret {namespace}/{name}"), e)),
        }
    }
}

fn to_kube_object(meta: ObjectMeta, body: ObjectBody) -> KubeObject {
    KubeObject {
        namespace: meta.namespace,
        name: meta.name.unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        resource_version: meta.resource_version,
        body,
    }
}

/// Create-only without a resourceVersion; otherwise a replace conditional on the one that was read.
async fn create_or_replace<K>(
    api: &Api<K>,
    name: &str,
    object: &K,
    create: bool,
) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    if create {
        api.create(&PostParams::default(), object).await.map(|_| ())
    } else {
        api.replace(name, &PostParams::default(), object)
            .await
            .map(|_| ())
    }
}

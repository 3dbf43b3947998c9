//! The core's `Cluster` port over kube-rs. Writes are conditional: create fails if the object exists,
//! replace and delete carry the resourceVersion that was read.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use meshtrust_core::ports::{
    Cluster, ErrorKind, KubeObject, ObjectKind, PortError, PortResult, SecretObject, System,
};
use meshtrust_core::secret::SecretBytes;

use crate::KubeCluster;

fn resource(kind: ObjectKind) -> (bool, ApiResource) {
    match kind {
        ObjectKind::ServiceAccount => (true, ApiResource::erase::<ServiceAccount>(&())),
        ObjectKind::ClusterRole => (false, ApiResource::erase::<ClusterRole>(&())),
        ObjectKind::ClusterRoleBinding => (false, ApiResource::erase::<ClusterRoleBinding>(&())),
    }
}

impl KubeCluster {
    fn dynamic(&self, kind: ObjectKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let (namespaced, resource) = resource(kind);
        match namespace {
            Some(ns) if namespaced => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

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
                format!("cannot reach the API server at {}: {other}", self.server),
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

    async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_seconds: i64,
    ) -> PortResult<(SecretBytes, i64)> {
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
        Ok((
            SecretBytes::new(status.token.into_bytes()),
            status.expiration_timestamp.0.as_second(),
        ))
    }

    async fn get_object(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> PortResult<Option<KubeObject>> {
        let api = self.dynamic(kind, namespace);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| self.error(&format!("get {kind:?} {name}"), e))?;
        Ok(found.map(|o| KubeObject {
            namespace: o.metadata.namespace.clone(),
            name: o.metadata.name.clone().unwrap_or_default(),
            labels: o.metadata.labels.clone().unwrap_or_default(),
            resource_version: o.metadata.resource_version.clone(),
            body: o.data,
        }))
    }

    async fn put_object(&self, kind: ObjectKind, object: &KubeObject) -> PortResult<()> {
        let api = self.dynamic(kind, object.namespace.as_deref());
        let (_, resource) = resource(kind);
        let mut dynamic = DynamicObject::new(&object.name, &resource).data(object.body.clone());
        dynamic.metadata.namespace = object.namespace.clone();
        dynamic.metadata.labels = Some(object.labels.clone());
        dynamic.metadata.resource_version = object.resource_version.clone();
        let op = format!("write {kind:?} {}", object.name);
        match &object.resource_version {
            None => api
                .create(&PostParams::default(), &dynamic)
                .await
                .map(|_| ()),
            Some(_) => api
                .replace(&object.name, &PostParams::default(), &dynamic)
                .await
                .map(|_| ()),
        }
        .map_err(|e| self.error(&op, e))
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

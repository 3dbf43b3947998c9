//! An in-memory Kubernetes cluster: namespaces, Secrets with resourceVersions (create-only, conditional
//! replace and delete), the reader identity's RBAC objects, and TokenRequest for existing ServiceAccounts.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use meshtrust_core::ports::{
    BoundToken, Cluster, CustomKind, ErrorKind, KubeObject, ObjectKind, PortError, PortResult,
    SecretObject, System,
};
use meshtrust_core::secret::SecretBytes;

use crate::faults::FakeCore;

/// Everything the fake cluster holds. Tests reach it through [`FakeCluster::with_state`].
#[derive(Default)]
pub struct ClusterState {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<(String, String), SecretObject>,
    /// ConfigMaps' data by (namespace, name): tests play istiod writing `istio-ca-root-cert`.
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    pub objects: BTreeMap<(ObjectKind, Option<String>, String), KubeObject>,
    /// Other controllers' custom objects (an `ExternalSecret` ...) by (plural, namespace), as JSON.
    pub custom_objects: BTreeMap<(String, String), Vec<serde_json::Value>>,
    resource_version: u64,
    tokens_issued: u64,
}

impl ClusterState {
    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Changes a Secret as another writer would (a new resourceVersion): how a test makes a race lost.
    pub fn touch_secret(&mut self, namespace: &str, name: &str) {
        let version = self.next_version();
        if let Some(s) = self.secrets.get_mut(&(namespace.into(), name.into())) {
            s.resource_version = Some(version);
        }
    }

    /// Puts a Secret there directly (someone else's, or an edited copy).
    pub fn insert_secret(&mut self, mut secret: SecretObject) {
        secret.resource_version = Some(self.next_version());
        default_type(&mut secret);
        self.secrets
            .insert((secret.namespace.clone(), secret.name.clone()), secret);
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&SecretObject> {
        self.secrets.get(&(namespace.into(), name.into()))
    }
}

#[derive(Clone)]
pub struct FakeCluster {
    name: String,
    server: String,
    ca_pem: Option<String>,
    core: Arc<FakeCore<ClusterState>>,
}

impl std::ops::Deref for FakeCluster {
    type Target = FakeCore<ClusterState>;

    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl FakeCluster {
    /// A cluster served at `https://<name>.example:6443` with a CA, whose clock (for token expiry) reads `now`.
    pub fn new(name: &str, now: i64) -> Self {
        FakeCluster {
            name: name.to_string(),
            server: format!("https://{name}.example:6443"),
            ca_pem: Some(format!(
                "-----BEGIN CERTIFICATE-----\nZmFrZS1jYS1{name}\n-----END CERTIFICATE-----\n"
            )),
            core: FakeCore::new(System::Cluster(name.to_string()), now),
        }
    }

    fn err(&self, kind: ErrorKind, operation: &str, message: &str) -> PortError {
        PortError::new(System::Cluster(self.name.clone()), kind, operation, message)
    }
}

/// The API server stores a Secret without a type as `Opaque`, on create and on replace alike, so a replace
/// that omits the type of an `Opaque` Secret is no change of type.
fn default_type(secret: &mut SecretObject) {
    secret.type_.get_or_insert_with(|| "Opaque".to_string());
}

/// `key=value[,key=value]` equality selectors, which is all meshtrust uses.
fn matches(labels: &BTreeMap<String, String>, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
            None => labels.contains_key(term),
        })
}

#[async_trait]
impl Cluster for FakeCluster {
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
        self.call(format!("get_namespace {namespace}"), |s, _| {
            Ok(s.namespaces.contains_key(namespace))
        })
    }

    async fn create_namespace(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> PortResult<()> {
        self.call(format!("create_namespace {namespace}"), |s, _| {
            s.namespaces
                .entry(namespace.into())
                .or_insert_with(|| labels.clone());
            Ok(())
        })
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> PortResult<Option<SecretObject>> {
        self.call(format!("get_secret {namespace}/{name}"), |s, _| {
            Ok(s.secret(namespace, name).cloned())
        })
    }

    async fn list_custom_objects(
        &self,
        kind: &CustomKind,
        namespace: &str,
    ) -> PortResult<Vec<serde_json::Value>> {
        self.call(
            format!("list_custom_objects {}/{namespace}", kind.plural),
            |s, _| {
                Ok(s.custom_objects
                    .get(&(kind.plural.to_string(), namespace.to_string()))
                    .cloned()
                    .unwrap_or_default())
            },
        )
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> PortResult<Option<BTreeMap<String, String>>> {
        self.call(format!("get_config_map {namespace}/{name}"), |s, _| {
            Ok(s.config_maps
                .get(&(namespace.to_string(), name.to_string()))
                .cloned())
        })
    }

    async fn create_secret(&self, secret: &SecretObject) -> PortResult<SecretObject> {
        self.call(
            format!("create_secret {}/{}", secret.namespace, secret.name),
            |s, op| {
                if !s.namespaces.contains_key(&secret.namespace) {
                    return Err(self.err(ErrorKind::NotFound, op, "namespace not found"));
                }
                let key = (secret.namespace.clone(), secret.name.clone());
                if s.secrets.contains_key(&key) {
                    return Err(self.err(ErrorKind::Conflict, op, "already exists"));
                }
                let mut written = secret.clone();
                default_type(&mut written);
                written.resource_version = Some(s.next_version());
                s.secrets.insert(key, written.clone());
                Ok(written)
            },
        )
    }

    async fn replace_secret(&self, secret: &SecretObject) -> PortResult<SecretObject> {
        self.call(
            format!("replace_secret {}/{}", secret.namespace, secret.name),
            |s, op| {
                let key = (secret.namespace.clone(), secret.name.clone());
                let Some(found) = s.secrets.get(&key) else {
                    return Err(self.err(ErrorKind::NotFound, op, "not found"));
                };
                if secret.resource_version.is_some()
                    && found.resource_version != secret.resource_version
                {
                    return Err(self.err(ErrorKind::Conflict, op, "the object has been modified"));
                }
                let mut written = secret.clone();
                default_type(&mut written);
                if found.type_ != written.type_ {
                    return Err(self.err(ErrorKind::Invalid, op, "field is immutable: type"));
                }
                written.resource_version = Some(s.next_version());
                s.secrets.insert(key, written.clone());
                Ok(written)
            },
        )
    }

    async fn list_secrets(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> PortResult<Vec<SecretObject>> {
        self.call(
            format!("list_secrets {namespace} {label_selector}"),
            |s, _| {
                Ok(s.secrets
                    .values()
                    .filter(|x| x.namespace == namespace && matches(&x.labels, label_selector))
                    .cloned()
                    .collect())
            },
        )
    }

    async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_seconds: i64,
    ) -> PortResult<BoundToken> {
        let now = self.now();
        self.call(
            format!("request_token {namespace}/{service_account}"),
            |s, op| {
                let key = (
                    ObjectKind::ServiceAccount,
                    Some(namespace.to_string()),
                    service_account.to_string(),
                );
                if !s.objects.contains_key(&key) {
                    return Err(self.err(ErrorKind::NotFound, op, "serviceaccounts not found"));
                }
                s.tokens_issued += 1;
                Ok(BoundToken {
                    token: SecretBytes::new(format!(
                        "token-{}-{}",
                        service_account, s.tokens_issued
                    )),
                    expires: now.saturating_add(ttl_seconds),
                })
            },
        )
    }

    async fn get_object(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        name: &str,
    ) -> PortResult<Option<KubeObject>> {
        self.call(format!("get_object {kind} {name}"), |s, _| {
            let namespace = namespace
                .filter(|_| kind == ObjectKind::ServiceAccount)
                .map(str::to_string);
            Ok(s.objects.get(&(kind, namespace, name.to_string())).cloned())
        })
    }

    async fn put_object(&self, object: &KubeObject) -> PortResult<()> {
        let kind = object.body.kind();
        self.call(format!("put_object {kind} {}", object.name), |s, op| {
            let namespace = object
                .namespace
                .clone()
                .filter(|_| kind == ObjectKind::ServiceAccount);
            let key = (kind, namespace, object.name.clone());
            match (s.objects.get(&key), &object.resource_version) {
                (Some(_), None) => return Err(self.err(ErrorKind::Conflict, op, "already exists")),
                (None, Some(_)) => return Err(self.err(ErrorKind::NotFound, op, "not found")),
                (Some(found), Some(rv)) if found.resource_version.as_ref() != Some(rv) => {
                    return Err(self.err(ErrorKind::Conflict, op, "the object has been modified"));
                }
                _ => {}
            }
            let mut written = object.clone();
            written.resource_version = Some(s.next_version());
            s.objects.insert(key, written);
            Ok(())
        })
    }

    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> PortResult<()> {
        self.call(format!("delete_secret {namespace}/{name}"), |s, op| {
            let key = (namespace.to_string(), name.to_string());
            match s.secrets.get(&key) {
                None => Ok(()),
                Some(found) if found.resource_version.as_deref() != Some(resource_version) => {
                    Err(self.err(
                        ErrorKind::Conflict,
                        op,
                        "precondition failed: resourceVersion",
                    ))
                }
                Some(_) => {
                    s.secrets.remove(&key);
                    Ok(())
                }
            }
        })
    }
}

//! The core's `OpenBao` port over the HTTP API.

use std::collections::BTreeMap;

use async_trait::async_trait;
use meshtrust_core::duration::Span;
use meshtrust_core::facts::RoleFacts;
use meshtrust_core::mesh::KeyType;
use meshtrust_core::ports::{
    AuthMountInfo, ErrorKind, GenerateOutcome, IssuerInfo, KeyInfo, KubernetesAuthConfig, KvEntry,
    KvMetadata, MountInfo, OpenBao, PortResult, RootRequest, SignRequest, SignedCertificate,
};
use meshtrust_core::secret::SecretBytes;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::OpenBaoClient;
use crate::client::{check, error, messages};

/// Entries per page of a `detailed-metadata` listing: each carries its versions' metadata (up to ~1.5 KB),
/// so a page stays far below the answer cap.
const LIST_PAGE: usize = 256;

/// Whether the server answered a `detailed-metadata` listing as one that offers it. Vault's KV v2 (and
/// OpenBao before 2.2) answer an unknown path with 404 and the warning "Invalid path for a versioned K/V
/// secrets engine", or 405 for an operation it does not route; an empty folder is a plain 404.
fn offers_detailed_metadata(response: &crate::client::Response) -> bool {
    let invalid_path = response
        .body
        .get("warnings")
        .and_then(Value::as_array)
        .is_some_and(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .any(|m| m.contains("Invalid path") || m.contains("unsupported"))
        });
    let unsupported = messages(&response.body).contains("unsupported path");
    !(response.status == StatusCode::METHOD_NOT_ALLOWED
        || (response.status == StatusCode::NOT_FOUND && (invalid_path || unsupported)))
}

/// The parts of an entry's metadata meshtrust compares (as `GET <mount>/metadata/<path>` gives them).
fn metadata_of(data: &Value) -> Option<KvMetadata> {
    let current_version = data.get("current_version").and_then(Value::as_u64)?;
    let current = data
        .get("versions")
        .and_then(|v| v.get(current_version.to_string()));
    let current_deleted = current.is_some_and(|v| {
        v.get("destroyed").and_then(Value::as_bool) == Some(true)
            || v.get("deletion_time")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
    });
    Some(KvMetadata {
        current_version,
        current_deleted,
    })
}

/// Percent-encodes a key for a query parameter (keys meshtrust lists are DNS labels, but a listing may hold
/// anything).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn list() -> Method {
    Method::from_bytes(b"LIST").unwrap_or(Method::GET)
}

/// An answer without a field OpenBao always sends: something else answered, or the API changed.
fn wrong_shape(operation: &str, pointer: &str) -> meshtrust_core::ports::PortError {
    error(
        ErrorKind::Invalid,
        operation,
        format!(
            "the answer has no {pointer} field; check that BAO_ADDR points at OpenBao 2.x (or Vault)"
        ),
    )
}

fn u64_field(body: &Value, pointer: &str, operation: &str) -> PortResult<u64> {
    body.pointer(pointer)
        .and_then(Value::as_u64)
        .ok_or_else(|| wrong_shape(operation, pointer))
}

fn str_field(body: &Value, pointer: &str, operation: &str) -> PortResult<String> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| wrong_shape(operation, pointer))
}

#[async_trait]
impl OpenBao for OpenBaoClient {
    async fn mount(&self, path: &str) -> PortResult<Option<MountInfo>> {
        let op = format!("GET sys/mounts/{path}");
        let response = self
            .call(Method::GET, &format!("sys/mounts/{path}"), None)
            .await?;
        // OpenBao answers 400 ("no matching mount") rather than 404 for a free path.
        if response.status == StatusCode::NOT_FOUND
            || (response.status == StatusCode::BAD_REQUEST && {
                let m = messages(&response.body).to_lowercase();
                m.contains("no matching mount") || m.contains("no secret engine mount")
            })
        {
            return Ok(None);
        }
        let body = check(&op, response)?;
        let data = body.get("data").unwrap_or(&body);
        let kind = str_field(data, "/type", &op)?;
        let tune_op = format!("GET sys/mounts/{path}/tune");
        let tune = self
            .call_ok(Method::GET, &format!("sys/mounts/{path}/tune"), None)
            .await?;
        let tune = tune.get("data").unwrap_or(&tune);
        let max_lease_ttl = u64_field(tune, "/max_lease_ttl", &tune_op)?;
        Ok(Some(MountInfo {
            kind,
            max_lease_ttl,
        }))
    }

    async fn enable_mount(
        &self,
        path: &str,
        kind: &str,
        max_lease_ttl: Option<Span>,
    ) -> PortResult<()> {
        let mut body = json!({ "type": kind });
        if let Some(ttl) = max_lease_ttl {
            body["config"] = json!({ "max_lease_ttl": ttl.to_string() });
        }
        if kind == "kv" {
            body["options"] = json!({ "version": "2" });
        }
        self.call_ok(Method::POST, &format!("sys/mounts/{path}"), Some(&body))
            .await
            .map(|_| ())
    }

    async fn tune_mount(&self, path: &str, max_lease_ttl: Span) -> PortResult<()> {
        let body = json!({ "max_lease_ttl": max_lease_ttl.to_string() });
        self.call_ok(
            Method::POST,
            &format!("sys/mounts/{path}/tune"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    async fn list_issuers(&self, pki: &str) -> PortResult<Vec<IssuerInfo>> {
        let response = self.call(list(), &format!("{pki}/issuers"), None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        let list_op = format!("LIST {pki}/issuers");
        let body = check(&list_op, response)?;
        // An empty mount answers 404; a 200 must describe its issuers.
        let info = body
            .pointer("/data/key_info")
            .and_then(Value::as_object)
            .ok_or_else(|| wrong_shape(&list_op, "/data/key_info"))?;
        let mut issuers = Vec::new();
        for (id, meta) in info {
            let op = format!("GET {pki}/issuer/{id}");
            let detail = self
                .call_ok(Method::GET, &format!("{pki}/issuer/{id}"), None)
                .await?;
            issuers.push(IssuerInfo {
                issuer_id: id.clone(),
                // An issuer may be unnamed; then it is not meshtrust's.
                issuer_name: meta
                    .get("issuer_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                key_id: str_field(meta, "/key_id", &list_op)?,
                certificate_pem: str_field(&detail, "/data/certificate", &op)?,
            });
        }
        Ok(issuers)
    }

    async fn key_info(&self, pki: &str, key_id: &str) -> PortResult<KeyInfo> {
        let op = format!("GET {pki}/key/{key_id}");
        let body = self
            .call_ok(Method::GET, &format!("{pki}/key/{key_id}"), None)
            .await?;
        Ok(KeyInfo {
            key_type: str_field(&body, "/data/key_type", &op)?,
            internal: body.pointer("/data/private_key").is_none(),
        })
    }

    async fn generate_root(&self, pki: &str, request: &RootRequest) -> PortResult<GenerateOutcome> {
        let op = format!("POST {pki}/issuers/generate/root/internal");
        let body = json!({
            "common_name": request.common_name,
            "organization": request.organization,
            "issuer_name": request.issuer_name,
            "key_type": match request.key.key_type { KeyType::Rsa => "rsa", KeyType::Ec => "ec" },
            "key_bits": request.key.bits,
            "ttl": request.ttl.to_string(),
            "exclude_cn_from_sans": true,
        });
        let response = self
            .call(
                Method::POST,
                &format!("{pki}/issuers/generate/root/internal"),
                Some(&body),
            )
            .await?;
        // Issuer names are unique per mount and OpenBao checks them under its issuers lock: the loser of a
        // race gets this error, which is exactly "someone else created it".
        if response.status == StatusCode::BAD_REQUEST
            && messages(&response.body).contains("issuer name already in use")
        {
            return Ok(GenerateOutcome::AlreadyExists);
        }
        check(&op, response).map(|_| GenerateOutcome::Created)
    }

    async fn import_root(
        &self,
        pki: &str,
        bundle: &SecretBytes,
        issuer_name: &str,
    ) -> PortResult<GenerateOutcome> {
        let path = format!("{pki}/issuers/import/bundle");
        let op = format!("POST {path}");
        let pem = bundle
            .expose_str()
            .ok_or_else(|| error(ErrorKind::Invalid, &op, "the bundle is not UTF-8 PEM"))?;
        let answer = self
            .call_ok(Method::POST, &path, Some(&json!({ "pem_bundle": pem })))
            .await?;
        // A new import lists its issuer under imported_issuers; a root the mount holds already under
        // existing_issuers (an earlier, interrupted import, or a concurrent one).
        let issuer = ["/data/imported_issuers", "/data/existing_issuers"]
            .iter()
            .filter_map(|p| answer.pointer(p).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .next()
            .map(str::to_string)
            .ok_or_else(|| wrong_shape(&op, "/data/imported_issuers"))?;
        let current = self
            .call_ok(Method::GET, &format!("{pki}/issuer/{issuer}"), None)
            .await?;
        if current.pointer("/data/issuer_name").and_then(Value::as_str) == Some(issuer_name) {
            return Ok(GenerateOutcome::AlreadyExists);
        }
        // PATCH changes the name alone: a POST would also reset the issuer's usage to defaults the imported
        // certificate may not allow (no cRLSign).
        let response = self
            .call(
                Method::PATCH,
                &format!("{pki}/issuer/{issuer}"),
                Some(&json!({ "issuer_name": issuer_name })),
            )
            .await?;
        if response.status == StatusCode::BAD_REQUEST
            && messages(&response.body).contains("issuer name already in use")
        {
            return Err(error(
                ErrorKind::Conflict,
                &format!("PATCH {pki}/issuer/{issuer}"),
                format!("another issuer is named {issuer_name} already"),
            ));
        }
        check(&format!("PATCH {pki}/issuer/{issuer}"), response).map(|_| GenerateOutcome::Created)
    }

    async fn sign_intermediate(
        &self,
        pki: &str,
        issuer: &str,
        request: &SignRequest,
    ) -> PortResult<SignedCertificate> {
        let path = format!("{pki}/issuer/{issuer}/sign-intermediate");
        let op = format!("POST {path}");
        let body = json!({
            "csr": request.csr_pem,
            "common_name": request.common_name,
            "organization": request.organization,
            "ttl": request.ttl.to_string(),
            // Strings, because policy parameter constraints compare request values with the policy's
            // strings: the agents' policies allow exactly "0" and "true".
            "max_path_length": "0",
            "exclude_cn_from_sans": "true",
            "format": "pem",
        });
        let answer = self.call_ok(Method::POST, &path, Some(&body)).await?;
        Ok(SignedCertificate {
            certificate_pem: str_field(&answer, "/data/certificate", &op)?,
            issuing_ca_pem: str_field(&answer, "/data/issuing_ca", &op)?,
            serial: str_field(&answer, "/data/serial_number", &op)?,
        })
    }

    async fn kv_get(&self, mount: &str, path: &str) -> PortResult<Option<KvEntry>> {
        self.kv_read(mount, path, None).await
    }

    async fn kv_get_version(
        &self,
        mount: &str,
        path: &str,
        version: u64,
    ) -> PortResult<Option<KvEntry>> {
        self.kv_read(mount, path, Some(version)).await
    }

    async fn kv_list(&self, mount: &str, folder: &str) -> PortResult<Vec<String>> {
        self.list_keys(&format!("{mount}/metadata/{folder}")).await
    }

    async fn kv_list_metadata(
        &self,
        mount: &str,
        folder: &str,
    ) -> PortResult<Option<BTreeMap<String, KvMetadata>>> {
        let folder = folder.trim_end_matches('/');
        let mut listed = BTreeMap::new();
        let mut after = String::new();
        loop {
            let api =
                format!("{mount}/detailed-metadata/{folder}/?limit={LIST_PAGE}&after={after}");
            let op = format!("LIST {mount}/detailed-metadata/{folder}/");
            let response = self.call(list(), &api, None).await?;
            if !offers_detailed_metadata(&response) {
                return Ok(None);
            }
            if response.status == StatusCode::NOT_FOUND {
                // An empty folder.
                return Ok(Some(listed));
            }
            let body = check(&op, response)?;
            let keys = body
                .pointer("/data/keys")
                .and_then(Value::as_array)
                .ok_or_else(|| wrong_shape(&op, "/data/keys"))?;
            for key in keys {
                let key = key
                    .as_str()
                    .ok_or_else(|| wrong_shape(&op, "/data/keys/*"))?;
                after = key.to_string();
                // A sub-folder, or an entry whose every version is gone, has no metadata to compare.
                let Some(info) = body.pointer("/data/key_info").and_then(|i| i.get(key)) else {
                    continue;
                };
                if let Some(meta) = metadata_of(info) {
                    listed.insert(key.to_string(), meta);
                }
            }
            if keys.len() < LIST_PAGE {
                return Ok(Some(listed));
            }
            after = url_encode(&after);
        }
    }

    async fn kv_put(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, SecretBytes>,
        cas: u64,
    ) -> PortResult<u64> {
        let api = format!("{mount}/data/{path}");
        let op = format!("POST {api}");
        let mut fields = serde_json::Map::new();
        for (k, v) in data {
            let text = v
                .expose_str()
                .ok_or_else(|| error(ErrorKind::Invalid, &op, format!("field {k} is not UTF-8")))?;
            fields.insert(k.clone(), Value::String(text.to_string()));
        }
        let body = json!({ "options": { "cas": cas }, "data": fields });
        let response = self.call(Method::POST, &api, Some(&body)).await?;
        if response.status == StatusCode::BAD_REQUEST
            && messages(&response.body).contains("check-and-set")
        {
            return Err(error(
                ErrorKind::Conflict,
                &op,
                format!(
                    "check-and-set at version {cas} failed: someone else wrote {mount}/{path} first"
                ),
            ));
        }
        let answer = check(&op, response)?;
        u64_field(&answer, "/data/version", &op)
    }

    async fn kv_delete(&self, mount: &str, path: &str) -> PortResult<()> {
        let api = format!("{mount}/metadata/{path}");
        let response = self.call(Method::DELETE, &api, None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(&format!("DELETE {api}"), response).map(|_| ())
    }

    async fn namespace_exists(&self, namespace: &str) -> PortResult<bool> {
        let (parent, leaf) = split_namespace(namespace);
        let response = self
            .call_in(parent, Method::GET, &format!("sys/namespaces/{leaf}"), None)
            .await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(&format!("GET sys/namespaces/{leaf}"), response).map(|_| true)
    }

    async fn create_namespace(&self, namespace: &str) -> PortResult<()> {
        let (parent, leaf) = split_namespace(namespace);
        let response = self
            .call_in(
                parent,
                Method::POST,
                &format!("sys/namespaces/{leaf}"),
                None,
            )
            .await?;
        check(&format!("POST sys/namespaces/{leaf}"), response).map(|_| ())
    }

    async fn auth_mounts(&self) -> PortResult<BTreeMap<String, AuthMountInfo>> {
        let body = self.call_ok(Method::GET, "sys/auth", None).await?;
        let mounts = body
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| wrong_shape("GET sys/auth", "/data"))?;
        // A listed mount without a type is not an answer OpenBao gives: refuse it rather than skip the mount,
        // which would read as "nothing mounted there" and plan a new mount over it.
        mounts
            .iter()
            .map(|(path, m)| {
                let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
                let info = AuthMountInfo {
                    kind: text("type").ok_or_else(|| {
                        wrong_shape("GET sys/auth", &format!("type (mount {path})"))
                    })?,
                    description: text("description").unwrap_or_default(),
                };
                Ok((path.trim_end_matches('/').to_string(), info))
            })
            .collect()
    }

    async fn auth_mount(&self, path: &str) -> PortResult<Option<String>> {
        Ok(self.auth_mounts().await?.remove(path).map(|m| m.kind))
    }

    async fn enable_auth(&self, path: &str, kind: &str, description: &str) -> PortResult<()> {
        self.call_ok(
            Method::POST,
            &format!("sys/auth/{path}"),
            Some(&json!({ "type": kind, "description": description })),
        )
        .await
        .map(|_| ())
    }

    async fn disable_auth(&self, path: &str) -> PortResult<()> {
        self.call_ok(Method::DELETE, &format!("sys/auth/{path}"), None)
            .await
            .map(|_| ())
    }

    async fn list_policies(&self) -> PortResult<Vec<String>> {
        let op = "LIST sys/policies/acl";
        let response = self.call(list(), "sys/policies/acl", None).await?;
        let body = check(op, response)?;
        let keys = body
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .ok_or_else(|| wrong_shape(op, "/data/keys"))?;
        Ok(keys
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect())
    }

    async fn delete_policy(&self, name: &str) -> PortResult<()> {
        let path = format!("sys/policies/acl/{name}");
        let response = self.call(Method::DELETE, &path, None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(&format!("DELETE {path}"), response).map(|_| ())
    }

    async fn kubernetes_auth_config(
        &self,
        mount: &str,
    ) -> PortResult<Option<KubernetesAuthConfig>> {
        let Some(data) = self.read_data(&format!("auth/{mount}/config")).await? else {
            return Ok(None);
        };
        let text = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(Some(KubernetesAuthConfig {
            kubernetes_host: text("kubernetes_host"),
            kubernetes_ca_cert: text("kubernetes_ca_cert"),
        }))
    }

    async fn write_kubernetes_auth_config(
        &self,
        mount: &str,
        config: &KubernetesAuthConfig,
    ) -> PortResult<()> {
        // No token_reviewer_jwt: OpenBao reviews each login JWT with itself, so no long-lived reviewer token is
        // stored (the agent's ServiceAccount needs system:auth-delegator instead).
        let body = json!({
            "kubernetes_host": config.kubernetes_host,
            "kubernetes_ca_cert": config.kubernetes_ca_cert,
            "disable_local_ca_jwt": true,
        });
        let path = format!("auth/{mount}/config");
        self.post(&path, &body).await?;
        // Each OpenBao node's Kubernetes auth backend verifies the API server with a CA pool it keeps in memory.
        // The node that handles a config write sets it at once; the others only from their own refresh every
        // 30 s (OpenBao's kubernetes auth: runTLSConfigUpdater, defaultHorizon). Standbys serve logins
        // themselves, so through a standby logins were refused (x509: unknown authority, answered as "permission
        // denied") for up to 30 s after apply. A standby applies a config write before forwarding it to the
        // active node, so the same write through every node ends the wait. docs/openbao.md has the details.
        for (node, why) in self.repeat_on_other_nodes(Method::POST, &path, &body).await {
            tracing::debug!(%node, %why, "the auth config reached this node only through storage: its logins may be refused for up to 30 s");
        }
        Ok(())
    }

    async fn kubernetes_auth_role(&self, mount: &str, role: &str) -> PortResult<Option<RoleFacts>> {
        let Some(data) = self.read_data(&format!("auth/{mount}/role/{role}")).await? else {
            return Ok(None);
        };
        let list = |k: &str| -> Vec<String> {
            data.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Some(RoleFacts {
            service_account_names: list("bound_service_account_names"),
            service_account_namespaces: list("bound_service_account_namespaces"),
            policies: list("token_policies"),
            token_ttl: data.get("token_ttl").and_then(Value::as_u64).unwrap_or(0),
        }))
    }

    async fn kubernetes_auth_roles(&self, mount: &str) -> PortResult<Vec<String>> {
        self.list_keys(&format!("auth/{mount}/role")).await
    }

    async fn delete_kubernetes_auth_role(&self, mount: &str, role: &str) -> PortResult<()> {
        let path = format!("auth/{mount}/role/{role}");
        let response = self.call(Method::DELETE, &path, None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(&format!("DELETE {path}"), response).map(|_| ())
    }

    async fn write_kubernetes_auth_role(
        &self,
        mount: &str,
        role: &str,
        settings: &RoleFacts,
    ) -> PortResult<()> {
        let body = json!({
            "bound_service_account_names": settings.service_account_names,
            "bound_service_account_namespaces": settings.service_account_namespaces,
            "token_policies": settings.policies,
            "token_ttl": settings.token_ttl,
        });
        self.post(&format!("auth/{mount}/role/{role}"), &body).await
    }

    async fn kv_metadata(&self, mount: &str, path: &str) -> PortResult<Option<KvMetadata>> {
        let api = format!("{mount}/metadata/{path}");
        let Some(data) = self.read_data(&api).await? else {
            return Ok(None);
        };
        let op = format!("GET {api}");
        metadata_of(&data)
            .map(Some)
            .ok_or_else(|| error(ErrorKind::Invalid, &op, "the answer has no current_version"))
    }

    async fn read_policy(&self, name: &str) -> PortResult<Option<String>> {
        let path = format!("sys/policies/acl/{name}");
        match self.read_data(&path).await? {
            Some(data) => str_field(&data, "/policy", &format!("GET {path}")).map(Some),
            None => Ok(None),
        }
    }

    async fn write_policy(&self, name: &str, text: &str) -> PortResult<()> {
        self.post(
            &format!("sys/policies/acl/{name}"),
            &json!({ "policy": text }),
        )
        .await
    }
}

impl OpenBaoClient {
    /// The current version of a KV v2 entry, or a given one.
    async fn kv_read(
        &self,
        mount: &str,
        path: &str,
        version: Option<u64>,
    ) -> PortResult<Option<KvEntry>> {
        let api = match version {
            Some(v) => format!("{mount}/data/{path}?version={v}"),
            None => format!("{mount}/data/{path}"),
        };
        let response = self.call(Method::GET, &api, None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let op = format!("GET {api}");
        let body = check(&op, response)?;
        let version = u64_field(&body, "/data/metadata/version", &op)?;
        let fields = match body.pointer("/data/data") {
            Some(Value::Object(fields)) => fields,
            // A soft-deleted or destroyed version: data is null, the metadata says so.
            Some(Value::Null) => return Ok(None),
            _ => return Err(wrong_shape(&op, "/data/data")),
        };
        let data = fields
            .iter()
            .map(|(k, v)| {
                let text = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (k.clone(), SecretBytes::new(text))
            })
            .collect();
        Ok(Some(KvEntry { data, version }))
    }

    /// The `data` of a plain read; `None` when absent.
    /// The keys a LIST of `api` answers; empty when OpenBao has nothing there (404).
    async fn list_keys(&self, api: &str) -> PortResult<Vec<String>> {
        let op = format!("LIST {api}");
        let response = self.call(list(), api, None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        let body = check(&op, response)?;
        let keys = body
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .ok_or_else(|| wrong_shape(&op, "/data/keys"))?;
        keys.iter()
            .map(|k| {
                k.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong_shape(&op, "/data/keys/*"))
            })
            .collect()
    }

    async fn read_data(&self, path: &str) -> PortResult<Option<Value>> {
        let response = self.call(Method::GET, path, None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let op = format!("GET {path}");
        let body = check(&op, response)?;
        match body.get("data") {
            Some(data @ Value::Object(_)) => Ok(Some(data.clone())),
            _ => Err(wrong_shape(&op, "/data")),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> PortResult<()> {
        self.call_ok(Method::POST, path, Some(body))
            .await
            .map(|_| ())
    }
}

/// `team/prod` → (Some("team"), "prod"); `prod` → (None, "prod").
fn split_namespace(namespace: &str) -> (Option<&str>, &str) {
    match namespace.rsplit_once('/') {
        Some((parent, leaf)) => (Some(parent), leaf),
        None => (None, namespace),
    }
}

#[cfg(test)]
mod field_props;

#[cfg(test)]
mod tests {
    use meshtrust_core::ports::OpenBao;

    use super::*;
    use crate::OpenBaoConfig;
    use crate::client::test_server::answering;

    fn client(address: String) -> OpenBaoClient {
        OpenBaoClient::new(OpenBaoConfig {
            address: address.clone(),
            addresses: vec![address],
            token: String::new(),
            namespace: None,
            ca_cert_pem: None,
            allow_insecure_http: false,
        })
        .expect("client")
    }

    #[tokio::test]
    async fn auth_mounts_reads_type_and_description() {
        let bao = client(answering(
            r#"{"data":{"kubernetes_a/":{"type":"kubernetes","description":"meshtrust: x"},"token/":{"type":"token"}}}"#,
        ));
        let mounts = bao.auth_mounts().await.expect("mounts");
        assert_eq!(mounts["kubernetes_a"].kind, "kubernetes");
        assert_eq!(mounts["kubernetes_a"].description, "meshtrust: x");
        assert_eq!(mounts["token"].description, "");
    }

    #[tokio::test]
    async fn an_auth_mount_without_a_type_is_refused_not_skipped() {
        // Skipping it would read as "nothing mounted there" and plan a new mount over it.
        let bao = client(answering(
            r#"{"data":{"kubernetes_a/":{"description":"x"}}}"#,
        ));
        let e = bao.auth_mounts().await.expect_err("refused").to_string();
        assert!(e.contains("kubernetes_a/") && e.contains("type"), "{e}");
    }
}

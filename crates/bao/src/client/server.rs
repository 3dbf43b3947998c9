//! Which server answers: OpenBao, or HashiCorp Vault (community or Enterprise), told apart by `sys/health`.
//! Vault's answer carries `"enterprise": true|false`; OpenBao's has no such field. meshtrust asks only when the
//! answer changes what it may do: a namespace is used only where the server has namespaces, because community
//! Vault ignores `X-Vault-Namespace` and would silently serve the root namespace instead.

use meshtrust_core::ports::{ErrorKind, PortResult};
use reqwest::Method;
use serde_json::Value;

use crate::OpenBaoClient;
use crate::client::error;

/// What `sys/health` says the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub product: Product,
    /// As the server reports it, e.g. `2.7.2` or `1.21.0`.
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    OpenBao,
    Vault { enterprise: bool },
}

impl ServerInfo {
    /// Reads a `sys/health` answer; `None` when it is not one (no `version`, or an `enterprise` that is not a
    /// boolean).
    pub fn from_health(body: &Value) -> Option<ServerInfo> {
        let version = body.get("version")?.as_str()?.to_string();
        let product = match body.get("enterprise") {
            None => Product::OpenBao,
            Some(Value::Bool(enterprise)) => Product::Vault {
                enterprise: *enterprise,
            },
            Some(_) => return None,
        };
        Some(ServerInfo { product, version })
    }

    /// Namespaces exist on OpenBao and on Vault Enterprise, not on Vault community edition.
    pub fn has_namespaces(&self) -> bool {
        self.product != Product::Vault { enterprise: false }
    }
}

impl std::fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.product {
            Product::OpenBao => write!(f, "OpenBao {}", self.version),
            Product::Vault { enterprise: false } => {
                write!(f, "HashiCorp Vault {} (community edition)", self.version)
            }
            Product::Vault { enterprise: true } => {
                write!(f, "HashiCorp Vault {} (Enterprise)", self.version)
            }
        }
    }
}

const HEALTH: &str = "sys/health?standbyok=true&perfstandbyok=true";

impl OpenBaoClient {
    /// The server behind this client, asked once (`sys/health`, unauthenticated) and remembered by clones.
    pub async fn server(&self) -> PortResult<ServerInfo> {
        if let Some(known) = self.server.lock().ok().and_then(|g| g.clone()) {
            return Ok(known);
        }
        let answer = self.exchange(None, Method::GET, HEALTH, None).await?;
        // Standbys, sealed or uninitialised servers answer with another status but the same fields.
        let info = ServerInfo::from_health(&answer.body).ok_or_else(|| {
            error(
                ErrorKind::Invalid,
                "GET sys/health",
                format!(
                    "the answer ({}) does not say which server this is (no version); check that BAO_ADDR points at OpenBao or Vault",
                    answer.status
                ),
            )
        })?;
        if let Ok(mut known) = self.server.lock() {
            *known = Some(info.clone());
        }
        Ok(info)
    }

    /// Refuses to go on with a namespace on a server without namespaces, before any request in it is sent.
    pub(crate) async fn require_namespaces(&self, namespace: &str) -> PortResult<()> {
        let server = self.server().await?;
        if server.has_namespaces() {
            return Ok(());
        }
        Err(error(
            ErrorKind::Invalid,
            &format!("use namespace {namespace:?}"),
            format!(
                "the server at {} is {server}, which has no namespaces (an Enterprise feature): it would ignore \
                 namespace {namespace:?} and read and write the root namespace instead. Remove openbao.namespace \
                 from the mesh file (and unset BAO_NAMESPACE and VAULT_NAMESPACE) to use the root namespace, or \
                 point meshtrust at OpenBao or Vault Enterprise",
                self.address()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn health_answers_tell_the_servers_apart() {
        // Trimmed from real answers: OpenBao 2.7.2 and Vault 1.21.0 dev servers.
        let bao =
            json!({"initialized": true, "sealed": false, "standby": false, "version": "2.7.2"});
        let vault = json!({"initialized": true, "sealed": false, "standby": false, "version": "1.21.0", "enterprise": false});
        let ent = json!({"version": "1.21.0+ent", "enterprise": true});
        let bao = ServerInfo::from_health(&bao).expect("OpenBao");
        assert_eq!(bao.product, Product::OpenBao);
        assert!(bao.has_namespaces());
        let vault = ServerInfo::from_health(&vault).expect("Vault");
        assert_eq!(vault.product, Product::Vault { enterprise: false });
        assert!(!vault.has_namespaces());
        assert_eq!(
            vault.to_string(),
            "HashiCorp Vault 1.21.0 (community edition)"
        );
        assert!(
            ServerInfo::from_health(&ent)
                .expect("Enterprise")
                .has_namespaces()
        );
        for not_health in [
            json!({}),
            json!([]),
            json!({"version": 1}),
            json!({"version": "1.21.0", "enterprise": "no"}),
        ] {
            assert_eq!(ServerInfo::from_health(&not_health), None, "{not_health}");
        }
    }
}

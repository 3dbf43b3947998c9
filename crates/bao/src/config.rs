use std::fmt;

/// Where OpenBao is and who we are there, read like the `bao` CLI reads it.
#[derive(Clone)]
pub struct OpenBaoConfig {
    pub address: String,
    pub token: String,
    pub namespace: Option<String>,
    /// PEM CA bundle to trust for OpenBao's TLS (`BAO_CACERT`).
    pub ca_cert_pem: Option<String>,
}

impl fmt::Debug for OpenBaoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoConfig")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("namespace", &self.namespace)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no OpenBao address: set BAO_ADDR (or VAULT_ADDR), or openbao.address in the mesh file"
    )]
    NoAddress,
    #[error(
        "no OpenBao token: set BAO_TOKEN (or VAULT_TOKEN) to a token with meshtrust's admin policy (see docs/openbao.md)"
    )]
    NoToken,
    #[error("cannot read the CA file {path} named by BAO_CACERT: {reason}")]
    CaFile { path: String, reason: String },
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl OpenBaoConfig {
    /// Environment first (`BAO_*`, then `VAULT_*`), then the mesh file's values.
    pub fn from_env(
        mesh_address: Option<&str>,
        mesh_namespace: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let address = env(&["BAO_ADDR", "VAULT_ADDR"])
            .or_else(|| mesh_address.map(str::to_string))
            .ok_or(ConfigError::NoAddress)?;
        let token = env(&["BAO_TOKEN", "VAULT_TOKEN"]).ok_or(ConfigError::NoToken)?;
        let namespace = env(&["BAO_NAMESPACE", "VAULT_NAMESPACE"])
            .or_else(|| mesh_namespace.map(str::to_string));
        let ca_cert_pem = match env(&["BAO_CACERT", "VAULT_CACERT"]) {
            Some(path) => {
                Some(
                    std::fs::read_to_string(&path).map_err(|e| ConfigError::CaFile {
                        path,
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        Ok(Self {
            address: address.trim_end_matches('/').to_string(),
            token,
            namespace,
            ca_cert_pem,
        })
    }
}

use std::fmt;

use meshtrust_core::ports::{ErrorKind, PortError, PortResult, System};

/// Where OpenBao is and who we are there, read like the `bao` CLI reads it.
#[derive(Clone)]
pub struct OpenBaoConfig {
    /// The address tried first (`BAO_ADDR`, else the first of `BAO_ADDRS`, else the mesh file's).
    pub address: String,
    /// Every node of an OpenBao HA cluster (`BAO_ADDRS`, space-separated). On a connection error the client
    /// moves on to the next; empty for a single server.
    pub addresses: Vec<String>,
    pub token: String,
    pub namespace: Option<String>,
    /// PEM CA bundle to trust for OpenBao's TLS (`BAO_CACERT`).
    pub ca_cert_pem: Option<String>,
    /// Allow `http://` to a host other than loopback (`--allow-insecure-http`): tokens would cross the
    /// network in clear text.
    pub allow_insecure_http: bool,
}

impl fmt::Debug for OpenBaoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoConfig")
            .field("address", &self.address)
            .field("addresses", &self.addresses)
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

/// The process environment, as [`OpenBaoConfig::from_lookup`] reads it.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl OpenBaoConfig {
    /// Where OpenBao is, without a token (an agent logs in for its own): `BAO_ADDR`, `BAO_NAMESPACE` and
    /// `BAO_CACERT` (or `VAULT_*`) first, then the mesh file's values.
    pub fn from_env_for_login(
        mesh_address: Option<&str>,
        mesh_namespace: Option<&str>,
    ) -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env, mesh_address, mesh_namespace)
    }

    /// [`from_env_for_login`](Self::from_env_for_login) over any variable source. For each setting the first
    /// non-empty of `BAO_<X>`, then `VAULT_<X>` (what the `vault` CLI reads), then the mesh file wins; so with
    /// both families set, `BAO_*` decides. `BAO_ADDRS` has no Vault twin (the `vault` CLI has no such variable).
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        mesh_address: Option<&str>,
        mesh_namespace: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| lookup(n).filter(|v| !v.is_empty()))
        };
        let addresses: Vec<String> = env(&["BAO_ADDRS"])
            .unwrap_or_default()
            .split_whitespace()
            .map(|a| a.trim_end_matches('/').to_string())
            .collect();
        let address = env(&["BAO_ADDR", "VAULT_ADDR"])
            .or_else(|| addresses.first().cloned())
            .or_else(|| mesh_address.map(str::to_string))
            .ok_or(ConfigError::NoAddress)?;
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
            addresses,
            token: String::new(),
            namespace,
            ca_cert_pem,
            allow_insecure_http: false,
        })
    }

    /// Environment first (`BAO_*`, then `VAULT_*`), then the mesh file's values.
    pub fn from_env(
        mesh_address: Option<&str>,
        mesh_namespace: Option<&str>,
    ) -> Result<Self, ConfigError> {
        Self::with_token_from(&process_env, mesh_address, mesh_namespace)
    }

    fn with_token_from(
        lookup: &dyn Fn(&str) -> Option<String>,
        mesh_address: Option<&str>,
        mesh_namespace: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let token = ["BAO_TOKEN", "VAULT_TOKEN"]
            .iter()
            .find_map(|n| lookup(n).filter(|v| !v.is_empty()))
            .ok_or(ConfigError::NoToken)?;
        Ok(Self {
            token,
            ..Self::from_lookup(lookup, mesh_address, mesh_namespace)?
        })
    }

    /// The mesh file's `openbao.caCert` (PEM text), unless `BAO_CACERT` or `VAULT_CACERT` named a CA file
    /// already: the environment wins, as for the address.
    pub fn with_mesh_ca_cert(mut self, pem: Option<&str>) -> Self {
        if self.ca_cert_pem.is_none() {
            self.ca_cert_pem = pem.map(str::to_string);
        }
        self
    }

    /// Every address to try, in order: `address` first, then the other nodes of `addresses`.
    pub fn candidates(&self) -> Vec<String> {
        let mut all = vec![self.address.clone()];
        for a in &self.addresses {
            if !all.contains(a) {
                all.push(a.clone());
            }
        }
        all
    }

    /// `https://` anywhere; `http://` only to loopback unless explicitly allowed. Checked for every node.
    pub fn check_transport(&self) -> PortResult<()> {
        self.candidates()
            .iter()
            .try_for_each(|a| self.check_address(a))
    }

    fn check_address(&self, address: &str) -> PortResult<()> {
        let refuse = |why: String| {
            Err(PortError::new(
                System::OpenBao,
                ErrorKind::Invalid,
                "check the OpenBao address",
                why,
            ))
        };
        let Some((scheme, rest)) = address.split_once("://") else {
            return refuse(format!(
                "{:?} is not a URL; set BAO_ADDR (or openbao.address) to https://host:8200",
                address
            ));
        };
        let host = host_of(rest);
        match scheme {
            "https" => Ok(()),
            "http" if self.allow_insecure_http || is_loopback(host) => Ok(()),
            "http" => refuse(format!(
                "{} uses http://, which would send tokens in clear text to {host}; use https:// (and BAO_CACERT), or pass --allow-insecure-http if you accept that",
                address
            )),
            other => refuse(format!(
                "{} has scheme {other:?}; OpenBao is reached over https://",
                address
            )),
        }
    }
}

/// The host of `host:port/path`, without brackets for IPv6.
fn host_of(rest: &str) -> &str {
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, allow: bool) -> OpenBaoConfig {
        OpenBaoConfig {
            address: address.into(),
            addresses: Vec::new(),
            token: String::new(),
            namespace: None,
            ca_cert_pem: None,
            allow_insecure_http: allow,
        }
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn vault_variables_work_alone_and_bao_variables_win_over_them() {
        let dir = std::env::temp_dir().join(format!("meshtrust-cacert-{}", std::process::id()));
        std::fs::write(&dir, "PEM").expect("write CA file");
        let ca = dir.display().to_string();
        let vault_only = lookup(&[
            ("VAULT_ADDR", "https://vault.example:8200/"),
            ("VAULT_TOKEN", "vault-token"),
            ("VAULT_NAMESPACE", "team"),
            ("VAULT_CACERT", &ca),
        ]);
        let c = OpenBaoConfig::with_token_from(&vault_only, Some("https://mesh"), None)
            .expect("VAULT_* alone");
        assert_eq!(c.address, "https://vault.example:8200");
        assert_eq!(c.token, "vault-token");
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert_eq!(c.ca_cert_pem.as_deref(), Some("PEM"));
        let both = lookup(&[
            ("BAO_ADDR", "https://bao.example:8200"),
            ("VAULT_ADDR", "https://vault.example:8200"),
            ("BAO_TOKEN", "bao-token"),
            ("VAULT_TOKEN", "vault-token"),
            ("BAO_NAMESPACE", ""),
            ("VAULT_NAMESPACE", "team"),
        ]);
        let c = OpenBaoConfig::with_token_from(&both, Some("https://mesh"), Some("mesh-ns"))
            .expect("both");
        assert_eq!(c.address, "https://bao.example:8200");
        assert_eq!(c.token, "bao-token");
        assert_eq!(
            c.namespace.as_deref(),
            Some("team"),
            "an empty BAO_NAMESPACE counts as unset"
        );
        let none = lookup(&[]);
        let c = OpenBaoConfig::with_token_from(
            &lookup(&[("VAULT_TOKEN", "t")]),
            Some("https://mesh"),
            Some("mesh-ns"),
        )
        .expect("mesh file values");
        assert_eq!(
            (c.address.as_str(), c.namespace.as_deref()),
            ("https://mesh", Some("mesh-ns"))
        );
        assert!(matches!(
            OpenBaoConfig::with_token_from(&none, Some("https://mesh"), None),
            Err(ConfigError::NoToken)
        ));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn the_mesh_files_ca_is_used_unless_the_environment_names_one() {
        let file =
            std::env::temp_dir().join(format!("meshtrust-cacert-env-{}", std::process::id()));
        std::fs::write(&file, "ENV PEM").expect("write CA file");
        let from_env = lookup(&[("BAO_CACERT", &file.display().to_string())]);
        let c = OpenBaoConfig::from_lookup(&from_env, Some("https://mesh"), None)
            .expect("config")
            .with_mesh_ca_cert(Some("MESH PEM"));
        assert_eq!(c.ca_cert_pem.as_deref(), Some("ENV PEM"), "BAO_CACERT wins");
        let c = OpenBaoConfig::from_lookup(&lookup(&[]), Some("https://mesh"), None)
            .expect("config")
            .with_mesh_ca_cert(Some("MESH PEM"));
        assert_eq!(c.ca_cert_pem.as_deref(), Some("MESH PEM"));
        let c = OpenBaoConfig::from_lookup(&lookup(&[]), Some("https://mesh"), None)
            .expect("config")
            .with_mesh_ca_cert(None);
        assert_eq!(c.ca_cert_pem, None, "the system's roots");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn plain_http_is_refused_except_to_loopback_or_when_allowed() {
        for ok in [
            "https://bao.example:8200",
            "http://127.0.0.1:8200",
            "http://127.8.9.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            assert!(config(ok, false).check_transport().is_ok(), "{ok}");
        }
        for bad in [
            "http://bao.example:8200",
            "http://10.0.0.1:8200",
            "http://localhost.evil.example:8200",
            "ftp://bao.example",
            "bao.example:8200",
        ] {
            let e = config(bad, false)
                .check_transport()
                .unwrap_err()
                .to_string();
            assert!(e.contains("https://"), "{bad}: {e}");
        }
        assert!(
            config("http://bao.example:8200", true)
                .check_transport()
                .is_ok()
        );
        let mut ha = config("http://127.0.0.1:8200", false);
        ha.addresses = vec![
            "http://127.0.0.1:8200".into(),
            "http://bao.example:8200".into(),
        ];
        assert_eq!(ha.candidates().len(), 2);
        assert!(ha.check_transport().is_err(), "every node is checked");
    }
}

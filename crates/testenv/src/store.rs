//! Which server plays "the store": OpenBao (the default) or HashiCorp Vault community edition. Both speak the
//! same HTTP API for everything meshtrust uses, so one suite runs on either: `MESHTRUST_STORE=vault` makes
//! every [`crate::TestEnv`] start Vault instead of OpenBao (see docs/testing.md).

use std::path::{Path, PathBuf};

use crate::{Binaries, TestEnvError};

/// The environment variable that picks the store for a whole test run.
pub const STORE_ENV: &str = "MESHTRUST_STORE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    OpenBao,
    /// HashiCorp Vault community edition (`scripts/build-vault`).
    Vault,
}

impl StoreKind {
    /// `MESHTRUST_STORE`: `openbao` (also when unset or empty) or `vault`.
    pub fn from_env() -> Result<Self, TestEnvError> {
        match std::env::var(STORE_ENV).unwrap_or_default().as_str() {
            "" | "openbao" | "bao" => Ok(Self::OpenBao),
            "vault" => Ok(Self::Vault),
            other => Err(TestEnvError::Kube(format!(
                "{STORE_ENV}={other:?} is not a store; use openbao (the default) or vault"
            ))),
        }
    }

    /// `openbao` or `vault`, as `MESHTRUST_STORE` and `scripts/dev-env --store` spell it.
    pub fn slug(self) -> &'static str {
        match self {
            Self::OpenBao => "openbao",
            Self::Vault => "vault",
        }
    }

    /// The server's log in its directory `dir` (`openbao.log` or `vault.log`).
    pub fn log_in(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.log", self.slug()))
    }

    /// `OpenBao` or `Vault`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenBao => "OpenBao",
            Self::Vault => "Vault",
        }
    }

    /// The server binary, or the command that provides it.
    pub fn binary(self, bins: &Binaries) -> Result<PathBuf, TestEnvError> {
        match self {
            Self::OpenBao => Ok(bins.bao.clone()),
            Self::Vault => {
                let vault = bins.vault.clone();
                if vault.is_file() {
                    Ok(vault)
                } else {
                    Err(TestEnvError::MissingBinary {
                        what: "vault (HashiCorp Vault)",
                        path: vault,
                        fix: "scripts/build-vault",
                    })
                }
            }
        }
    }

    /// A CLI command of this store aimed at `addr` with `token`: both servers' CLIs take the same commands;
    /// both variable families are set so either CLI reads them.
    pub fn cli(bin: &Path, addr: &str, token: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin);
        cmd.env("BAO_ADDR", addr)
            .env("BAO_TOKEN", token)
            .env("VAULT_ADDR", addr)
            .env("VAULT_TOKEN", token);
        cmd
    }
}

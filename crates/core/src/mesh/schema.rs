//! The mesh file exactly as written: every field optional, unknown fields rejected. The section validators
//! turn these into the validated settings in `mod.rs`, filling in defaults.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawMesh {
    pub(super) api_version: Option<String>,
    pub(super) kind: Option<String>,
    #[serde(rename = "meshID")]
    pub(super) mesh_id: Option<String>,
    #[serde(default)]
    pub(super) openbao: RawOpenBao,
    #[serde(default)]
    pub(super) ca: RawCa,
    #[serde(default)]
    pub(super) agent: RawAgent,
    #[serde(default)]
    pub(super) remote_secrets: RawRemoteSecrets,
    #[serde(default)]
    pub(super) clusters: Vec<RawCluster>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) service_account: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) token_ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawRemoteSecrets {
    pub(super) kv_path: Option<String>,
    pub(super) index_path: Option<String>,
    pub(super) token_ttl: Option<String>,
    pub(super) refresh_before: Option<String>,
    pub(super) reader_identity: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawOpenBao {
    pub(super) address: Option<String>,
    pub(super) ca_cert: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) kv_mount: Option<String>,
    pub(super) pki_mount: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawCa {
    pub(super) mode: Option<String>,
    pub(super) secret_format: Option<String>,
    #[serde(default)]
    pub(super) root: RawRoot,
    #[serde(default)]
    pub(super) intermediate: RawIntermediate,
    pub(super) shared_root_kv_path: Option<String>,
    #[serde(default)]
    pub(super) root_rotation: RawRootRotation,
    pub(super) import_root: Option<RawImportRoot>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawImportRoot {
    pub(super) kv_path: Option<String>,
    pub(super) issuer: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawRootRotation {
    pub(super) phase_dwell: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawRoot {
    pub(super) common_name: Option<String>,
    pub(super) organization: Option<String>,
    pub(super) key_type: Option<String>,
    pub(super) key_bits: Option<u32>,
    pub(super) ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawIntermediate {
    pub(super) key_type: Option<String>,
    pub(super) key_bits: Option<u32>,
    pub(super) ttl: Option<String>,
    pub(super) renew_before: Option<String>,
    pub(super) organization: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: Option<String>,
    pub(super) kubeconfig: Option<String>,
    pub(super) context: Option<String>,
    pub(super) network: Option<String>,
    pub(super) api_server: Option<String>,
    pub(super) auth_mount: Option<String>,
    pub(super) istio_namespace: Option<String>,
}

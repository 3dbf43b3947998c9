//! Logging in to OpenBao with the agent's ServiceAccount token through `auth/<cluster's mount>`.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use meshtrust_bao::OpenBaoClient;
use meshtrust_core::bao_plan::AGENT_ROLE;
use meshtrust_core::ports::{ErrorKind, PortError, System};
use reqwest::Method;
use serde_json::{Value, json};

/// Where the agent's ServiceAccount JWT comes from.
#[derive(Debug, Clone)]
pub enum JwtSource {
    /// A projected token file (in-cluster: /var/run/secrets/kubernetes.io/serviceaccount/token).
    File(PathBuf),
    /// TokenRequest for the agent's ServiceAccount (out-of-cluster runs, such as tests).
    TokenRequest {
        namespace: String,
        service_account: String,
    },
}

async fn jwt(source: &JwtSource, client: &kube::Client) -> Result<String, PortError> {
    let fail =
        |what: String| PortError::new(System::OpenBao, ErrorKind::Invalid, "agent login", what);
    match source {
        JwtSource::File(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                fail(format!(
                    "cannot read the ServiceAccount token {}: {e}",
                    path.display()
                ))
            }),
        JwtSource::TokenRequest {
            namespace,
            service_account,
        } => {
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(600),
                    bound_object_ref: None,
                },
                ..Default::default()
            };
            let issued = api
                .create_token_request(service_account, &PostParams::default(), &request)
                .await
                .map_err(|e| {
                    fail(format!(
                        "TokenRequest for {namespace}/{service_account}: {e}"
                    ))
                })?;
            issued
                .status
                .map(|s| s.token)
                .ok_or_else(|| fail("TokenRequest returned no token".into()))
        }
    }
}

/// Logs in and returns a client carrying the agent's OpenBao token, and the token's lifetime in seconds.
pub async fn login(
    base: &OpenBaoClient,
    auth_mount: &str,
    source: &JwtSource,
    kube: &kube::Client,
) -> Result<(OpenBaoClient, u64), PortError> {
    let jwt = jwt(source, kube).await?;
    let body = json!({ "role": AGENT_ROLE, "jwt": jwt });
    let answer = base
        .call_ok(
            Method::POST,
            &format!("auth/{auth_mount}/login"),
            Some(&body),
        )
        .await?;
    let token = answer
        .pointer("/auth/client_token")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            PortError::new(
                System::OpenBao,
                ErrorKind::Invalid,
                "agent login",
                "no client_token in the answer",
            )
        })?;
    let ttl = answer
        .pointer("/auth/lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(3600);
    Ok((base.with_token(token.to_string()), ttl))
}

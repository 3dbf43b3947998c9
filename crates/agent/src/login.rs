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
        /// The mesh file's name of the cluster, for the fixing command in errors.
        cluster: String,
        namespace: String,
        service_account: String,
    },
}

/// A TokenRequest failure as a sentence naming the ServiceAccount and the fix; never the API's debug form.
fn token_request_error(
    cluster: &str,
    namespace: &str,
    service_account: &str,
    error: &kube::Error,
) -> PortError {
    let system = System::Cluster(cluster.to_string());
    let sa = format!("{namespace}/{service_account}");
    let (kind, message) = match error {
        kube::Error::Api(status) if status.code == 404 => (
            ErrorKind::NotFound,
            format!(
                "the ServiceAccount {sa} does not exist, so the agent has no token to log in to OpenBao with; \
                 create it and the agent's RBAC with `meshtrust render agent --cluster {cluster} | kubectl apply -f -`"
            ),
        ),
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => (
            ErrorKind::Denied,
            format!(
                "the kubeconfig's user may not request a token for the ServiceAccount {sa} ({}); use a kubeconfig \
                 allowed to create serviceaccounts/token in {namespace}, such as the cluster admin's",
                status.message
            ),
        ),
        kube::Error::Api(status) => (
            ErrorKind::Invalid,
            format!(
                "TokenRequest for the ServiceAccount {sa} failed with HTTP {}: {}",
                status.code, status.message
            ),
        ),
        other => (
            ErrorKind::Unavailable,
            format!(
                "cannot request a token for the ServiceAccount {sa}: {}",
                meshtrust_kube::describe(other)
            ),
        ),
    };
    PortError::new(system, kind, "agent login", message)
}

/// A refused login says what to check, not "the token's policies" (there is no token yet).
fn login_refused(error: PortError, auth_mount: &str) -> PortError {
    if error.kind != ErrorKind::Denied {
        return error;
    }
    PortError::new(
        System::OpenBao,
        ErrorKind::Denied,
        "agent login",
        format!(
            "OpenBao refused the login through auth/{auth_mount} as role {AGENT_ROLE}. Check that `meshtrust apply` \
             has configured this cluster (`meshtrust plan` lists nothing for auth/{auth_mount}), that the agent runs \
             as the ServiceAccount the role names (agent.serviceAccount in the mesh file) and that it may create \
             TokenReviews (system:auth-delegator, in `meshtrust render agent`). An OpenBao standby that apply did not \
             reach directly refuses logins for up to 30 s after apply configured the mount (give apply every node \
             in BAO_ADDRS); the agent keeps retrying"
        ),
    )
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
            cluster,
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
                .map_err(|e| token_request_error(cluster, namespace, service_account, &e))?;
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
        .await
        .map_err(|e| login_refused(e, auth_mount))?;
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

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "x").with_code(code).boxed())
    }

    #[test]
    fn a_refused_login_says_what_to_check_not_the_tokens_policies() {
        let denied = PortError::new(
            System::OpenBao,
            ErrorKind::Denied,
            "POST auth/kubernetes_a/login",
            "permission denied (permission denied); the token's policies do not allow this, see `meshtrust bao policies`",
        );
        let text = login_refused(denied, "kubernetes_a").to_string();
        assert!(
            text.contains("auth/kubernetes_a") && text.contains("system:auth-delegator"),
            "{text}"
        );
        assert!(!text.contains("policies do not allow"), "{text}");
        let down = PortError::new(
            System::OpenBao,
            ErrorKind::Unavailable,
            "POST x",
            "cannot reach",
        );
        assert_eq!(
            login_refused(down, "m").kind,
            ErrorKind::Unavailable,
            "other errors pass through"
        );
    }

    #[test]
    fn a_missing_service_account_names_the_fixing_command() {
        let e = token_request_error(
            "cluster-a",
            "istio-system",
            "meshtrust-agent",
            &api(404, "serviceaccounts \"meshtrust-agent\" not found"),
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        let text = e.to_string();
        assert!(
            text.contains("`meshtrust render agent --cluster cluster-a | kubectl apply -f -`"),
            "{text}"
        );
        assert!(text.starts_with("cluster cluster-a: agent login: the ServiceAccount istio-system/meshtrust-agent does not exist"), "{text}");
        assert!(
            !text.contains("Status {") && !text.contains("Some("),
            "{text}"
        );
    }

    #[test]
    fn other_answers_are_sentences_too() {
        let denied = token_request_error("b", "ns", "sa", &api(403, "forbidden")).to_string();
        assert!(
            denied.contains("may not request a token for the ServiceAccount ns/sa (forbidden)"),
            "{denied}"
        );
        let other = token_request_error("b", "ns", "sa", &api(500, "etcd down")).to_string();
        assert!(
            other.ends_with("failed with HTTP 500: etcd down"),
            "{other}"
        );
        assert!(!other.contains("Status {"), "{other}");
    }
}

//! Which of the Secrets meshtrust writes another controller writes or wrote: External Secrets Operator, the Vault
//! Secrets Operator or cert-manager, from the marks each leaves on its target (ownerReferences, labels,
//! annotations) and a look at whether the controller's object that targets the Secret still exists.

use std::collections::BTreeMap;

use meshtrust_core::handover::{ClaimState, Controller, ForeignClaim, claimed_by};
use meshtrust_core::ports::{Cluster, CustomKind, ErrorKind, SecretObject};
use serde_json::Value;

use crate::EngineError;

fn custom_kind(controller: Controller) -> CustomKind {
    match controller {
        // v1 is served from ESO 0.16.2 on (and only it from 0.17).
        Controller::ExternalSecrets => CustomKind {
            group: "external-secrets.io",
            version: "v1",
            kind: "ExternalSecret",
            plural: "externalsecrets",
        },
        Controller::VaultSecretsOperator => CustomKind {
            group: "secrets.hashicorp.com",
            version: "v1beta1",
            kind: "VaultStaticSecret",
            plural: "vaultstaticsecrets",
        },
        Controller::CertManager => CustomKind {
            group: "cert-manager.io",
            version: "v1",
            kind: "Certificate",
            plural: "certificates",
        },
    }
}

/// The Secret an object of the controller writes, from its spec.
fn target_of(controller: Controller, object: &Value) -> Option<String> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let name = match controller {
        // An ExternalSecret without target.name writes a Secret of its own name.
        Controller::ExternalSecrets => text("/spec/target/name").or(text("/metadata/name")),
        Controller::VaultSecretsOperator => text("/spec/destination/name"),
        Controller::CertManager => text("/spec/secretName"),
    };
    name.map(str::to_string)
}

/// The claim on `secret` of the controller whose marks it carries, if any.
async fn claim(
    cluster: &dyn Cluster,
    secret: &SecretObject,
) -> Result<Option<ForeignClaim>, EngineError> {
    let Some((controller, named, owner_reference)) = claimed_by(secret) else {
        return Ok(None);
    };
    let objects = match cluster
        .list_custom_objects(&custom_kind(controller), &secret.namespace)
        .await
    {
        Ok(objects) => objects,
        Err(e) if e.kind == ErrorKind::Denied => {
            return Ok(Some(ForeignClaim {
                controller,
                object: named,
                owner_reference,
                state: ClaimState::Unknown,
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let name_of = |o: &Value| {
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let targeting = objects
        .iter()
        .find(|o| target_of(controller, o).as_deref() == Some(secret.name.as_str()));
    let (object, state) = match (targeting, named) {
        (Some(o), _) => (name_of(o), ClaimState::Live),
        (None, named) => (named, ClaimState::Gone),
    };
    Ok(Some(ForeignClaim {
        controller,
        object,
        owner_reference,
        state,
    }))
}

/// The claims on the Secrets meshtrust writes in one cluster (`cacerts` and the remote secrets), by name.
/// Only Secrets that carry a controller's marks cost a request.
pub(super) async fn observe_claims(
    cluster: &dyn Cluster,
    secrets: impl Iterator<Item = &SecretObject>,
) -> Result<BTreeMap<String, ForeignClaim>, EngineError> {
    let mut claims = BTreeMap::new();
    for secret in secrets {
        if let Some(found) = claim(cluster, secret).await? {
            claims.insert(secret.name.clone(), found);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn targets_come_from_each_controllers_spec() {
        let es = serde_json::json!({"metadata": {"name": "istio-cacerts"}, "spec": {}});
        assert_eq!(
            target_of(Controller::ExternalSecrets, &es).as_deref(),
            Some("istio-cacerts")
        );
        let es =
            serde_json::json!({"metadata": {"name": "x"}, "spec": {"target": {"name": "cacerts"}}});
        assert_eq!(
            target_of(Controller::ExternalSecrets, &es).as_deref(),
            Some("cacerts")
        );
        let vss = serde_json::json!({"spec": {"destination": {"name": "istio-remote-secret-b"}}});
        assert_eq!(
            target_of(Controller::VaultSecretsOperator, &vss).as_deref(),
            Some("istio-remote-secret-b")
        );
    }
}

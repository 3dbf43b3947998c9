//! Installs Istio's CRDs (the multi-document `crd-all.gen.yaml` from the istio module) into an API server and
//! waits until every one is Established, as `helm install istio-base` would leave them.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::TestEnvError;

/// Every CRD document in `yaml` (documents without `kind: CustomResourceDefinition` are skipped).
pub(crate) fn parse(yaml: &str) -> Result<Vec<CustomResourceDefinition>, TestEnvError> {
    let mut out = Vec::new();
    for doc in split_documents(yaml) {
        let value: serde_json::Value = serde_saphyr::from_str(doc)
            .map_err(|e| TestEnvError::Kube(format!("Istio's CRD file does not parse: {e}")))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
            continue;
        }
        out.push(serde_json::from_value(value).map_err(|e| {
            TestEnvError::Kube(format!("a CRD in Istio's CRD file is not a CRD: {e}"))
        })?);
    }
    Ok(out)
}

fn split_documents(yaml: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in yaml.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&yaml[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&yaml[start..]);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Server-side applies every CRD of `file` and waits for all of them to be Established.
pub(crate) async fn install(client: kube::Client, file: &Path) -> Result<usize, TestEnvError> {
    let yaml = std::fs::read_to_string(file).map_err(TestEnvError::io(file))?;
    let crds = parse(&yaml)?;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let params = PatchParams::apply("meshtrust-testenv").force();
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|e| TestEnvError::Kube(format!("installing CRD {name}: {e}")))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let current = api
                .get(&name)
                .await
                .map_err(|e| TestEnvError::Kube(e.to_string()))?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(TestEnvError::Kube(format!(
                    "CRD {name} was not Established within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(crds.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_only_crds() {
        let yaml = "# header\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: a.example.io\nspec:\n  group: example.io\n  names: {kind: A, plural: a}\n  scope: Namespaced\n  versions: []\n---\nkind: ConfigMap\nmetadata: {name: x}\n---\n";
        let crds = parse(yaml).expect("parse");
        assert_eq!(crds.len(), 1);
        assert_eq!(crds[0].metadata.name.as_deref(), Some("a.example.io"));
    }
}

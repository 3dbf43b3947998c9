//! The reader identity peers use to read a cluster: `istio-reader-service-account`, Istio's reader ClusterRole
//! and its binding. meshtrust creates what is missing and repairs what it owns; Istio's own objects are used
//! as they are.

use meshtrust_core::istio::{READER_SERVICE_ACCOUNT, reader_cluster_role_name, reader_rules};
use meshtrust_core::mesh::ClusterSettings;
use meshtrust_core::ports::{Cluster, KubeObject, ObjectBody, ObjectKind, ServiceAccountRef};

use crate::EngineError;
use crate::names::{is_managed, managed_labels};
use crate::snapshot::ReaderObjects;

/// ServiceAccount, ClusterRole and ClusterRoleBinding, as meshtrust (or its deploy files) write them.
pub fn desired_reader(settings: &ClusterSettings) -> [KubeObject; 3] {
    let ns = &settings.istio_namespace;
    let role_name = reader_cluster_role_name(ns);
    let mut labels = managed_labels();
    labels.insert("app".into(), "istio-reader".into());
    let object = |namespace: Option<String>, name: String, body| KubeObject {
        namespace,
        name,
        labels: labels.clone(),
        resource_version: None,
        body,
    };
    [
        object(
            Some(ns.clone()),
            READER_SERVICE_ACCOUNT.into(),
            ObjectBody::ServiceAccount,
        ),
        object(
            None,
            role_name.clone(),
            ObjectBody::ClusterRole {
                rules: reader_rules(),
            },
        ),
        object(
            None,
            role_name.clone(),
            ObjectBody::ClusterRoleBinding {
                cluster_role: role_name,
                subjects: vec![ServiceAccountRef {
                    namespace: ns.clone(),
                    name: READER_SERVICE_ACCOUNT.into(),
                }],
            },
        ),
    ]
}

/// Whether a found object grants what the wanted one does (labels and versions aside).
pub(crate) fn is_up_to_date(found: &KubeObject, wanted: &KubeObject) -> bool {
    found.body == wanted.body
}

/// Creates what is missing of the reader identity and repairs what meshtrust owns.
pub(crate) async fn ensure_reader(
    cluster: &dyn Cluster,
    settings: &ClusterSettings,
    found: &ReaderObjects,
) -> Result<String, EngineError> {
    let existing = [&found.service_account, &found.cluster_role, &found.binding];
    let mut done = Vec::new();
    for (mut wanted, existing) in desired_reader(settings).into_iter().zip(existing) {
        let kind = wanted.body.kind();
        // Istio's own objects are used as they are; a managed ServiceAccount has nothing to update.
        wanted.resource_version = match existing {
            Some(o) if !is_managed(&o.labels) || kind == ObjectKind::ServiceAccount => continue,
            Some(o) if is_up_to_date(o, &wanted) => continue,
            Some(o) => o.resource_version.clone(),
            None => None,
        };
        cluster.put_object(&wanted).await?;
        done.push(format!("{kind} {}", wanted.name));
    }
    Ok(format!("wrote {}", done.join(", ")))
}

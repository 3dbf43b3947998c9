//! Names meshtrust gives to the objects it owns, shared by every crate so that what one writes another finds:
//! labels, annotations, Secret and issuer names. Changing one is a compatibility break for running meshes.

/// The label meshtrust puts on every object it writes; an object without it is never overwritten.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "meshtrust";

/// The Secret istiod reads its plug-in CA from, in the Istio namespace.
pub const CACERTS: &str = "cacerts";

/// On `cacerts`: the serial of the intermediate meshtrust wrote, so a changed Secret is noticed.
pub const SERIAL_ANNOTATION: &str = "meshtrust.dev/ca-serial";
/// On `cacerts`: the fingerprints of the roots in `root-cert.pem`, comma-separated.
pub const ROOTS_ANNOTATION: &str = "meshtrust.dev/root-fingerprints";
/// On a remote secret: the KV version it was copied from, so an unchanged entry costs no write.
pub const KV_VERSION_ANNOTATION: &str = "meshtrust.dev/kv-version";

/// The version of the formats meshtrust publishes: KV entries, the change marker, trust facts and the marks on
/// the Secrets it writes. A reader accepts every older version (none written: 0, the releases before
/// versioning) and reads what it knows of a newer one; a writer keeps the fields it does not know. It moves only
/// with a change an older reader would misread. docs/operations.md states the promise.
pub const FORMAT_VERSION: u32 = 1;
/// The KV field carrying [`FORMAT_VERSION`] in published entries and the change marker. Not a DNS label, so it
/// never collides with the field named after the cluster.
pub const FORMAT_FIELD: &str = "formatVersion";
/// The annotation carrying [`FORMAT_VERSION`] on `cacerts` and remote secrets.
pub const FORMAT_ANNOTATION: &str = "meshtrust.dev/format-version";

/// The remote secret for a peer is `istio-remote-secret-<peer>`, as `istioctl create-remote-secret` names it.
pub const REMOTE_SECRET_PREFIX: &str = "istio-remote-secret-";

/// meshtrust's root issuers in the PKI mount are `meshtrust-root-<generation>`.
pub const ROOT_ISSUER_PREFIX: &str = "meshtrust-root-";

/// The agent's name: its default ServiceAccount, its RBAC objects and its Deployment.
pub const AGENT_NAME: &str = "meshtrust-agent";
/// The ConfigMap that carries the mesh file to the agent.
pub const MESH_CONFIG_MAP: &str = "meshtrust-mesh";

pub fn remote_secret_name(cluster: &str) -> String {
    format!("{REMOTE_SECRET_PREFIX}{cluster}")
}

/// The peer a remote secret points at, from its name; `None` for any other Secret.
pub fn remote_secret_peer(secret_name: &str) -> Option<&str> {
    secret_name
        .strip_prefix(REMOTE_SECRET_PREFIX)
        .filter(|peer| !peer.is_empty())
}

pub fn root_issuer_name(generation: u32) -> String {
    format!("{ROOT_ISSUER_PREFIX}{generation}")
}

/// The generation of a meshtrust root issuer, from its name; `None` for an issuer meshtrust did not name.
pub fn root_generation(issuer_name: &str) -> Option<u32> {
    issuer_name.strip_prefix(ROOT_ISSUER_PREFIX)?.parse().ok()
}

/// The description meshtrust gives the Kubernetes auth mount it creates for `cluster`: how it later recognises
/// its own mount when the cluster leaves the mesh.
pub fn auth_mount_description(cluster: &str) -> String {
    format!("meshtrust: Kubernetes auth of cluster {cluster}")
}

/// The cluster named by a description meshtrust wrote; `None` for any other description.
pub fn auth_mount_cluster(description: &str) -> Option<&str> {
    description.strip_prefix("meshtrust: Kubernetes auth of cluster ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_issuer_names_round_trip() {
        assert_eq!(root_issuer_name(3), "meshtrust-root-3");
        for generation in [1, 2, 17, u32::MAX] {
            assert_eq!(
                root_generation(&root_issuer_name(generation)),
                Some(generation)
            );
        }
    }

    #[test]
    fn foreign_issuer_names_have_no_generation() {
        for name in [
            "default",
            "meshtrust-root-",
            "meshtrust-root-x",
            "meshtrust-root--1",
            "other-root-1",
        ] {
            assert_eq!(root_generation(name), None, "{name}");
        }
    }

    #[test]
    fn remote_secret_names_round_trip() {
        assert_eq!(
            remote_secret_name("cluster-b"),
            "istio-remote-secret-cluster-b"
        );
        assert_eq!(
            remote_secret_peer(&remote_secret_name("cluster-b")),
            Some("cluster-b")
        );
        assert_eq!(remote_secret_peer("istio-remote-secret-"), None);
        assert_eq!(remote_secret_peer("cacerts"), None);
    }
}

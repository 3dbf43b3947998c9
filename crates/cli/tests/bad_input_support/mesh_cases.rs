//! Malformed mesh files: each with the field (or fact) its message must name.

use std::path::PathBuf;

use super::{Case, MeshSource};

/// `valid` with `extra` inserted before `clusters:` (top-level sections).
fn top(valid: &str, extra: &str) -> String {
    valid.replacen("clusters:\n", &format!("{extra}clusters:\n"), 1)
}

/// `valid` with `extra` appended to the (only) cluster's entry.
fn cluster(valid: &str, extra: &str) -> String {
    format!("{valid}{extra}")
}

/// `valid` with the cluster named `name`.
fn named(valid: &str, name: &str) -> String {
    valid.replace("name: cluster-a", &format!("name: {name}"))
}

fn billion_laughs() -> String {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        s.push_str(&format!("{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    s
}

fn huge_file() -> String {
    format!("# {}\n", "x".repeat(2 << 20))
}

#[allow(clippy::too_many_lines)]
fn texts(v: &str) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "mesh: YAML syntax error",
            "clusters: [\n  - {name: a\n".into(),
            "not a valid mesh file",
        ),
        (
            "mesh: tab indentation",
            top(v, "ca:\n\tmode: bao-pki\n"),
            "not a valid mesh file",
        ),
        ("mesh: empty file", "\n".into(), "mesh.yaml"),
        (
            "mesh: a list, not a map",
            "- a\n- b\n".into(),
            "not a valid mesh file",
        ),
        (
            "mesh: clusters is a string",
            top(v, "").replace(
                "clusters:\n  - name: cluster-a\n    kubeconfig: kubeconfig-a\n",
                "clusters: cluster-a\n",
            ),
            "clusters",
        ),
        (
            "mesh: keyBits not a number",
            top(v, "ca:\n  root:\n    keyBits: big\n"),
            "keyBits",
        ),
        (
            "mesh: keyBits negative",
            top(v, "ca:\n  root:\n    keyBits: -1\n"),
            "keyBits",
        ),
        (
            "mesh: unknown top-level field",
            top(v, "clsuters: []\n"),
            "clsuters",
        ),
        (
            "mesh: unknown cluster field",
            cluster(v, "    kubeconfg: x\n"),
            "kubeconfg",
        ),
        (
            "mesh: no clusters",
            top(v, "").replace(
                "clusters:\n  - name: cluster-a\n    kubeconfig: kubeconfig-a\n",
                "",
            ),
            "clusters",
        ),
        (
            "mesh: wrong apiVersion",
            v.replace("meshtrust.dev/v1", "meshtrust.dev/v9"),
            "apiVersion",
        ),
        (
            "mesh: uppercase cluster name",
            named(v, "Cluster_A"),
            "clusters[0].name",
        ),
        (
            "mesh: cluster name 123",
            named(v, "\"123\""),
            "clusters[0].name",
        ),
        (
            "mesh: cluster name 1e3",
            named(v, "\"1e3\""),
            "clusters[0].name",
        ),
        (
            "mesh: cluster name 0x1f",
            named(v, "\"0x1f\""),
            "clusters[0].name",
        ),
        (
            "mesh: cluster name true",
            named(v, "\"true\""),
            "clusters[0].name",
        ),
        (
            "mesh: cluster name null",
            named(v, "\"null\""),
            "clusters[0].name",
        ),
        (
            "mesh: duplicate cluster",
            format!("{v}  - name: cluster-a\n    kubeconfig: kubeconfig-a\n"),
            "appears twice",
        ),
        (
            "mesh: network true",
            cluster(v, "    network: \"true\"\n"),
            "clusters[0].network",
        ),
        ("mesh: meshID 123", top(v, "meshID: \"123\"\n"), "meshID"),
        (
            "mesh: root ttl 500000y",
            top(v, "ca:\n  root:\n    ttl: 500000y\n"),
            "ca.root.ttl",
        ),
        (
            "mesh: ttl overflows u64",
            top(v, "ca:\n  root:\n    ttl: 99999999999999999999y\n"),
            "ca.root.ttl",
        ),
        (
            "mesh: ttl zero",
            top(v, "ca:\n  intermediate:\n    ttl: 0s\n"),
            "ca.intermediate.ttl",
        ),
        (
            "mesh: ttl without unit",
            top(v, "agent:\n  tokenTtl: \"12\"\n"),
            "agent.tokenTtl",
        ),
        (
            "mesh: token ttl 200y",
            top(v, "remoteSecrets:\n  tokenTtl: 200y\n"),
            "remoteSecrets.tokenTtl",
        ),
        (
            "mesh: intermediate outlives root",
            top(
                v,
                "ca:\n  root:\n    ttl: 1h\n  intermediate:\n    ttl: 2h\n    renewBefore: 1m\n",
            ),
            "ca.intermediate.ttl",
        ),
        (
            "mesh: apiServer with newline",
            cluster(
                v,
                "    apiServer: \"https://10.0.0.1:6443\\n    evil: x\"\n",
            ),
            "clusters[0].apiServer",
        ),
        (
            "mesh: apiServer http://",
            cluster(v, "    apiServer: http://10.0.0.1:6443\n"),
            "clusters[0].apiServer",
        ),
        (
            "mesh: apiServer credentials",
            cluster(v, "    apiServer: https://u:p@10.0.0.1\n"),
            "clusters[0].apiServer",
        ),
        (
            "mesh: apiServer query",
            cluster(v, "    apiServer: https://10.0.0.1?x=1\n"),
            "clusters[0].apiServer",
        ),
        (
            "mesh: apiServer port 99999",
            cluster(v, "    apiServer: https://10.0.0.1:99999\n"),
            "clusters[0].apiServer",
        ),
        (
            "mesh: HCL quote in organization",
            top(
                v,
                "ca:\n  intermediate:\n    organization: 'x\" } path \"*\" { capabilities = [\"sudo\"] } #'\n",
            ),
            "ca.intermediate.organization",
        ),
        (
            "mesh: HCL interpolation in commonName",
            top(v, "ca:\n  root:\n    commonName: \"${env}\"\n"),
            "ca.root.commonName",
        ),
        (
            "mesh: traversal in kvMount",
            top(v, "").replace("openbao:\n", "openbao:\n  kvMount: ../sys\n"),
            "openbao.kvMount",
        ),
        (
            "mesh: keyBits 1024",
            top(v, "ca:\n  root:\n    keyBits: 1024\n"),
            "keyBits",
        ),
        (
            "mesh: unknown secretFormat",
            top(v, "ca:\n  secretFormat: pkcs12\n"),
            "ca.secretFormat",
        ),
        ("mesh: billion laughs", billion_laughs(), "mesh.yaml"),
        ("mesh: 2 MiB file", huge_file(), "larger than 1 MiB"),
        (
            "mesh: control characters",
            "apiVersion: \u{0}\u{1}\n".into(),
            "mesh.yaml",
        ),
    ]
}

/// Every mesh-file case, given a valid mesh file and kubeconfig to start from.
pub fn mesh_cases(valid: &str, kubeconfig: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = texts(valid)
        .into_iter()
        .map(|(name, text, needle)| {
            Case::mesh_text(name, &text, kubeconfig).needles(&["mesh.yaml", needle])
        })
        .collect();
    let paths = [
        (
            "mesh: /dev/zero",
            PathBuf::from("/dev/zero"),
            "larger than 1 MiB",
        ),
        (
            "mesh: a directory",
            PathBuf::from("/"),
            "cannot read the mesh file /",
        ),
        (
            "mesh: missing file",
            PathBuf::from("/nonexistent/mesh.yaml"),
            "/nonexistent/mesh.yaml",
        ),
    ];
    for (name, path, needle) in paths {
        let mut case = Case::mesh_text(name, "", kubeconfig).needles(&[needle]);
        case.mesh = MeshSource::Path(path);
        cases.push(case);
    }
    cases
}

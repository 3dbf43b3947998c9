use super::*;

fn parse(text: &str) -> Result<Mesh, MeshError> {
    Mesh::from_yaml(text, "mesh.yaml", PathBuf::from("/m"))
}

const MINIMAL: &str = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nclusters:\n  - name: cluster-a\n    kubeconfig: kc-a\n";

#[test]
fn minimal_file_gets_every_default() {
    let mesh = parse(MINIMAL).expect("valid");
    assert_eq!(mesh.mesh_id, "mesh1");
    assert_eq!(mesh.openbao.kv_mount, "secret");
    assert_eq!(mesh.openbao.pki_mount, "pki");
    assert_eq!(mesh.ca.mode, CaMode::BaoPki);
    assert_eq!(mesh.ca.secret_format, SecretFormat::Istio);
    assert_eq!(
        mesh.ca.root.key,
        KeySpec {
            key_type: KeyType::Rsa,
            bits: 4096
        }
    );
    assert_eq!(mesh.ca.root.ttl, Span::hours(87600));
    assert_eq!(
        mesh.ca.intermediate.key,
        KeySpec {
            key_type: KeyType::Ec,
            bits: 256
        }
    );
    assert_eq!(mesh.ca.intermediate.renew_before, Span::hours(720));
    assert_eq!(mesh.ca.phase_dwell, Span::hours(24));
    let a = &mesh.clusters[0];
    assert_eq!(a.auth_mount, "kubernetes_cluster_a");
    assert_eq!(
        a.kubeconfig.as_deref(),
        Some(std::path::Path::new("/m/kc-a"))
    );
    assert_eq!(a.istio_namespace, "istio-system");
    assert_eq!(a.network, "network-cluster-a");
}

#[test]
fn every_problem_names_its_field_and_fix() {
    let text = "apiVersion: v0\nkind: Mesh\nca:\n  mode: magic\n  intermediate:\n    keyType: ec\n    keyBits: 521\n    ttl: 10\n    renewBefore: 9000h\nclusters:\n  - name: Cluster_A\n    apiServer: http://x\n  - name: b\n  - name: b\n";
    let Err(MeshError::Invalid { problems, .. }) = parse(text) else {
        panic!("must be invalid")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "apiVersion",
        "ca.mode",
        "ca.intermediate.keyBits",
        "ca.intermediate.ttl",
        "clusters[0].name",
        "clusters[0].apiServer",
        "clusters[2].name",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    assert!(problems.iter().all(|p| !p.message.is_empty()));
}

#[test]
fn unknown_fields_and_bad_yaml_are_syntax_errors() {
    let err = parse("apiVersion: meshtrust.dev/v1\nkind: Mesh\nclustrs: []\n").unwrap_err();
    assert!(err.to_string().contains("clustrs"), "{err}");
    let err = parse("clusters: [\n").unwrap_err();
    assert!(matches!(err, MeshError::Syntax { .. }));
}

#[test]
fn renew_before_must_be_shorter_than_ttl() {
    let text = format!("{MINIMAL}ca:\n  intermediate:\n    ttl: 24h\n    renewBefore: 48h\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("ca.intermediate.renewBefore"), "{err}");
}

#[test]
fn phase_dwell_is_a_span_shorter_than_the_intermediate_ttl() {
    let ok = format!("{MINIMAL}ca:\n  rootRotation:\n    phaseDwell: 5s\n");
    assert_eq!(parse(&ok).expect("valid").ca.phase_dwell, Span(5));
    for bad in ["0s", "soon", "9000h"] {
        let text = format!("{MINIMAL}ca:\n  rootRotation:\n    phaseDwell: {bad}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("ca.rootRotation.phaseDwell"), "{bad}: {err}");
    }
    // The default does not refuse short-lived intermediates.
    let short = format!("{MINIMAL}ca:\n  intermediate:\n    ttl: 120s\n    renewBefore: 60s\n");
    assert!(parse(&short).is_ok());
}

#[test]
fn no_clusters_is_a_problem() {
    let err = parse("apiVersion: meshtrust.dev/v1\nkind: Mesh\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("clusters: no clusters"), "{err}");
}

#[test]
fn every_section_reports_its_problems_in_one_run() {
    let text = "apiVersion: meshtrust.dev/v1\nkind: Mesh\nmeshID: Bad_ID\nopenbao:\n  address: bao:8200\n  kvMount: /kv\nagent:\n  namespace: Not_A_Label\nremoteSecrets:\n  tokenTtl: 5m\n  indexPath: istio/remote-secrets/index\nclusters:\n  - name: a\n    istioNamespace: Bad_NS\n";
    let Err(MeshError::Invalid { problems, .. }) = parse(text) else {
        panic!("must be invalid")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "meshID",
            "openbao.address",
            "openbao.kvMount",
            "agent.namespace",
            "remoteSecrets.refreshBefore",
            "remoteSecrets.tokenTtl",
            "remoteSecrets.indexPath",
            "clusters[0].istioNamespace",
        ]
    );
}

fn problems_of(text: &str) -> String {
    match parse(text) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn huge_ttls_are_problems_not_panics() {
    let text = format!("{MINIMAL}ca:\n  root:\n    ttl: 500000y\n");
    let e = problems_of(&text);
    assert!(e.contains("ca.root.ttl") && e.contains("100 years"), "{e}");
    let e = problems_of(&format!("{MINIMAL}agent:\n  tokenTtl: 101y\n"));
    assert!(e.contains("agent.tokenTtl"), "{e}");
}

#[test]
fn names_yaml_would_misread_are_refused() {
    for name in ["123", "1e3", "0x1f", "true", "null", "on", "no"] {
        let text = format!(
            "apiVersion: meshtrust.dev/v1\nkind: Mesh\nclusters:\n  - name: \"{name}\"\n    kubeconfig: kc\n"
        );
        let e = problems_of(&text);
        assert!(e.contains("clusters[0].name"), "{name}: {e}");
    }
    let e = problems_of(&format!("{MINIMAL}    network: \"true\"\n"));
    assert!(e.contains("clusters[0].network"), "{e}");
}

#[test]
fn api_server_must_be_a_plain_https_url() {
    for api in [
        "https://10.0.0.1:6443\\nevil: x",
        "https://a b",
        "https://h:99999",
        "https://h?x=1",
    ] {
        let e = problems_of(&format!("{MINIMAL}    apiServer: \"{api}\"\n"));
        assert!(e.contains("clusters[0].apiServer"), "{api}: {e}");
    }
    assert!(parse(&format!("{MINIMAL}    apiServer: https://10.0.0.1:6443\n")).is_ok());
}

#[test]
fn oversized_text_is_refused_before_parsing() {
    let text = format!("{MINIMAL}#{}\n", "x".repeat(MAX_MESH_FILE_BYTES));
    let e = problems_of(&text);
    assert!(e.contains("larger than 1 MiB"), "{e}");
}

#[test]
fn openbao_ca_cert_is_a_pem_block_or_a_problem_naming_the_field() {
    let with = |ca: &str| {
        MINIMAL.replace(
            "kind: Mesh\n",
            &format!("kind: Mesh\nopenbao:\n  caCert: {ca}\n"),
        )
    };
    let pem = "|\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    -----END CERTIFICATE-----";
    let mesh = parse(&with(pem)).expect("a PEM block");
    assert_eq!(
        mesh.openbao.ca_cert.as_deref(),
        Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    );
    assert_eq!(parse(MINIMAL).expect("valid").openbao.ca_cert, None);
    assert_eq!(parse(&with("\"\"")).expect("empty").openbao.ca_cert, None);
    let problems = problems_of(&with("/etc/ssl/openbao-ca.pem"));
    assert!(
        problems.contains("openbao.caCert") && problems.contains("BEGIN CERTIFICATE"),
        "{problems}"
    );
}

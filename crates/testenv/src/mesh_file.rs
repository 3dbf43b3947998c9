use crate::TestEnv;

/// The `mesh.yaml` for an environment: every cluster with its admin kubeconfig, its own network and the API
/// address peers use. The OpenBao address and token come from `env.sh` (BAO_ADDR/BAO_TOKEN).
pub fn mesh_file(env: &TestEnv) -> String {
    mesh_file_with(env, "")
}

/// The same, with `extra` top-level YAML (for example a `ca:` section) inserted before `clusters:`.
pub fn mesh_file_with(env: &TestEnv, extra: &str) -> String {
    let mut out = format!(
        "# written by scripts/dev-env: a local mesh of real API servers and a real {} dev server.\n\
         # Reference: docs/mesh-file.md\n\
         apiVersion: meshtrust.dev/v1\n\
         kind: Mesh\n\
         meshID: local-mesh\n\
         openbao:\n  address: ",
        env.bao.kind.name()
    );
    // With nodes, the address pods reach (TLS, private CA); tools on the host take BAO_ADDR from env.sh.
    let ha = env.bao_ha.as_ref().map(|ha| &ha.nodes[0]);
    match (ha, &env.bao.tls_addr) {
        (Some(node), _) => out.push_str(node.tls_addr.as_ref().unwrap_or(&node.addr)),
        (None, Some(tls)) => out.push_str(tls),
        (None, None) => out.push_str(&env.bao.addr),
    }
    out.push('\n');
    // The private CA of that TLS listener (one for the dev server and the Raft nodes), in the mesh file itself:
    // the chart's `--set-file mesh=` carries it to the agents, so `helm install` needs nothing more.
    if let Some(ca) = &env.bao.tls_ca_pem {
        out.push_str("  caCert: |\n");
        for line in ca.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push_str(extra);
    out.push_str("clusters:\n");
    for c in &env.clusters {
        out.push_str(&format!(
            "  - name: {name}\n    kubeconfig: {kc}\n    network: network-{name}\n    apiServer: {server}\n",
            name = c.name,
            kc = c.kubeconfig.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
            server = c.server,
        ));
    }
    out
}

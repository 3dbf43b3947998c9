//! The long-running half of `scripts/dev-env up`: starts the store (OpenBao, or Vault with `--store vault`) and
//! N clusters, writes `env.sh`, kubeconfigs and
//! `mesh.yaml` into DIR, then waits for SIGTERM/SIGINT and stops everything it started.
//! `helm-values` serves `scripts/dev-env istio`: the values of one Flux HelmRelease from `render gitops`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use meshtrust_testenv::{StoreKind, TestEnv, mesh_file};

fn usage() -> ExitCode {
    eprintln!(
        "usage: meshtrust-devenv serve --clusters N --dir DIR [--openbao-ha] [--store openbao|vault] [--nodes [--node-image TAR]...]\n       meshtrust-devenv helm-values RELEASE CLUSTER < rendered.yaml"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, release, cluster] = args.as_slice()
        && command == "helm-values"
    {
        return helm_values(release, cluster);
    }
    if args.first().map(String::as_str) != Some("serve") {
        return usage();
    }
    let mut clusters = 2usize;
    let mut dir: Option<PathBuf> = None;
    let mut ha = false;
    let mut nodes: Option<Vec<PathBuf>> = None;
    let mut store = StoreKind::OpenBao;
    let mut it = args.iter().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--openbao-ha" {
            ha = true;
            continue;
        }
        if flag == "--nodes" {
            nodes.get_or_insert_with(Vec::new);
            continue;
        }
        match (flag.as_str(), it.next()) {
            ("--node-image", Some(tar)) => {
                nodes.get_or_insert_with(Vec::new).push(PathBuf::from(tar))
            }
            ("--clusters", Some(n)) => match n.parse() {
                Ok(n) if (1..=26).contains(&n) => clusters = n,
                _ => {
                    eprintln!("--clusters takes a number from 1 to 26, got {n:?}");
                    return ExitCode::from(2);
                }
            },
            ("--dir", Some(d)) => dir = Some(PathBuf::from(d)),
            ("--store", Some(s)) if s == "openbao" => store = StoreKind::OpenBao,
            ("--store", Some(s)) if s == "vault" => store = StoreKind::Vault,
            ("--store", Some(s)) => {
                eprintln!("--store takes openbao or vault, got {s:?}");
                return ExitCode::from(2);
            }
            _ => return usage(),
        }
    }
    let Some(dir) = dir else { return usage() };
    match serve(clusters, dir, ha, store, nodes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtrust-devenv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    clusters: usize,
    dir: PathBuf,
    ha: bool,
    store: StoreKind,
    nodes: Option<Vec<PathBuf>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = TestEnv::builder().clusters(clusters).dir(&dir).store(store);
    if ha {
        builder = builder.openbao_ha();
    }
    if let Some(images) = nodes {
        builder = builder.nodes(images);
    }
    let env = builder.start()?;
    // With --openbao-ha, the tools talk to the Raft cluster: BAO_ADDR is its first node, BAO_ADDRS every node.
    let (addr, token, addrs) = match &env.bao_ha {
        Some(cluster) => (
            cluster.nodes[0].addr.clone(),
            cluster.root_token.clone(),
            format!("export BAO_ADDRS=\"{}\"\n", cluster.addrs().join(" ")),
        ),
        None => (
            env.bao.addr.clone(),
            env.bao.root_token.clone(),
            String::new(),
        ),
    };
    let bin = store.binary(&meshtrust_testenv::Binaries::locate()?)?;
    // Both variable families, so `bao`, `vault` and meshtrust all find the store whichever it is.
    let env_sh = format!(
        "# written by scripts/dev-env; source it to talk to the local {name}\nexport MESHTRUST_STORE={slug}\nexport BAO_ADDR={addr}\n{addrs}export BAO_TOKEN={token}\nexport VAULT_ADDR=$BAO_ADDR\nexport VAULT_TOKEN=$BAO_TOKEN\nalias bao={bin}\nalias vault={bin}\n",
        name = store.name(),
        slug = store.slug(),
        bin = bin.display(),
    );
    std::fs::write(dir.join("env.sh"), env_sh)?;
    std::fs::write(dir.join("mesh.yaml"), mesh_file(&env))?;
    // With --openbao-ha --nodes: the Raft nodes as pods reach them, as values for the agent chart
    // (`helm install ... -f DIR/openbao-ha-values.yaml`).
    if let Some(ha) = env.bao_ha.as_ref().filter(|ha| !ha.tls_addrs().is_empty()) {
        let list: Vec<String> = ha.tls_addrs().iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            dir.join("openbao-ha-values.yaml"),
            format!("openbao:\n  addresses: [{}]\n", list.join(", ")),
        )?;
    }
    let pids: Vec<String> = env.pids().iter().map(u32::to_string).collect();
    std::fs::write(dir.join("children.pids"), pids.join("\n") + "\n")?;
    // `scripts/dev-env down` removes these if this process is killed before it can.
    let cgroups: Vec<String> = env
        .nodes
        .iter()
        .flat_map(|n| n.cgroup_dirs())
        .map(|d| d.display().to_string())
        .collect();
    std::fs::write(dir.join("cgroups"), cgroups.join("\n") + "\n")?;
    std::fs::write(dir.join("ready"), "")?;
    eprintln!(
        "meshtrust-devenv: ready ({} clusters) in {}",
        clusters,
        dir.display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        Ok::<(), std::io::Error>(())
    })?;
    let _ = std::fs::remove_file(dir.join("ready"));
    drop(env);
    eprintln!("meshtrust-devenv: stopped");
    Ok(())
}

/// Prints (as JSON) the values of HelmRelease `<release>-<cluster>` from `meshtrust render gitops --flavor flux`
/// read on stdin.
fn helm_values(release: &str, cluster: &str) -> ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
        eprintln!("meshtrust-devenv: cannot read the rendered YAML on stdin: {e}");
        return ExitCode::FAILURE;
    }
    let name = format!("{release}-{cluster}");
    let found = text
        .split("\n---")
        .filter_map(|doc| {
            serde_saphyr::from_str::<serde_json::Value>(doc.trim_start_matches("---")).ok()
        })
        .find(|doc| doc["kind"] == "HelmRelease" && doc["metadata"]["name"] == name.as_str());
    match found {
        Some(doc) => {
            println!("{}", doc["spec"]["values"]);
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "meshtrust-devenv: no HelmRelease {name} in the rendered YAML (render gitops --flavor flux)"
            );
            ExitCode::FAILURE
        }
    }
}

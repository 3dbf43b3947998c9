//! `meshtrust init`: a commented mesh file from kubeconfig contexts, one cluster per context, so nobody has to
//! start one by hand. It reads each context's API address and CA, checks the result with the mesh loader, and
//! never overwrites a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use kube::config::Kubeconfig;
use meshtrust_core::mesh::Mesh;

use crate::args::InitArgs;
use crate::error::CliError;

/// One context as the mesh file will list it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub context: String,
    pub name: String,
    pub kubeconfig: PathBuf,
    pub server: String,
    /// "CN, expires YYYY-MM-DD", or why there is none.
    pub ca: String,
}

pub fn run(args: InitArgs) -> Result<ExitCode, CliError> {
    let files = kubeconfig_files(args.kubeconfig.as_deref())?;
    let loaded = load(&files)?;
    let contexts = if args.context.is_empty() {
        vec![current_context(&loaded)?]
    } else {
        args.context.clone()
    };
    let mut found = Vec::new();
    for context in &contexts {
        let f = find(&loaded, context)?;
        if f.name != *context {
            eprintln!(
                "context {context:?} becomes cluster {:?}: cluster names must be DNS labels (lowercase letters, digits, '-')",
                f.name
            );
        }
        if let Some(other) = found.iter().find(|o: &&Found| o.name == f.name) {
            return Err(CliError::Usage(format!(
                "contexts {:?} and {:?} both become cluster {:?}; pass only one of them",
                other.context, f.context, f.name
            )));
        }
        found.push(f);
    }
    if let Some(address) = &args.openbao
        && !(address.starts_with("https://") || address.starts_with("http://"))
    {
        return Err(CliError::Usage(format!(
            "--openbao {address:?}: give OpenBao's URL, such as https://openbao.example.internal:8200"
        )));
    }
    let to_stdout = args.out.as_os_str() == "-";
    let base = if to_stdout {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    } else {
        absolute(args.out.parent().unwrap_or(Path::new(".")))
    };
    let text = mesh_text(&found, args.openbao.as_deref(), &args.mesh_id, &base);
    // What init writes must load; a failure here is meshtrust's bug, reported rather than written.
    Mesh::from_yaml(&text, &args.out.display().to_string(), base.clone())?;
    if to_stdout {
        print!("{text}");
    } else {
        write_new(&args.out, &text)?;
        eprintln!(
            "wrote {} with {} cluster(s): {}; review apiServer and network, then run `meshtrust --mesh {} apply`",
            args.out.display(),
            found.len(),
            found
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The kubeconfig files, as kubectl picks them: the flag, else every entry of $KUBECONFIG, else ~/.kube/config.
pub fn kubeconfig_files(flag: Option<&Path>) -> Result<Vec<PathBuf>, CliError> {
    if let Some(path) = flag {
        return Ok(vec![path.to_path_buf()]);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let files: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !files.is_empty() {
            return Ok(files);
        }
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(vec![PathBuf::from(home).join(".kube").join("config")]),
        None => Err(CliError::Usage(
            "no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG".into(),
        )),
    }
}

fn load(files: &[PathBuf]) -> Result<Vec<(PathBuf, Kubeconfig)>, CliError> {
    files
        .iter()
        .map(|path| {
            Kubeconfig::read_from(path)
                .map(|kc| (absolute(path), kc))
                .map_err(|e| {
                    CliError::Usage(format!(
                        "cannot read kubeconfig {}: {e}; pass --kubeconfig FILE",
                        path.display()
                    ))
                })
        })
        .collect()
}

fn current_context(loaded: &[(PathBuf, Kubeconfig)]) -> Result<String, CliError> {
    loaded
        .iter()
        .find_map(|(_, kc)| kc.current_context.clone().filter(|c| !c.is_empty()))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no --context given and no current-context set; pass --context NAME for each cluster (contexts: {})",
                context_names(loaded)
            ))
        })
}

fn context_names(loaded: &[(PathBuf, Kubeconfig)]) -> String {
    let names: Vec<&str> = loaded
        .iter()
        .flat_map(|(_, kc)| kc.contexts.iter().map(|c| c.name.as_str()))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Finds `context` with kubectl's merge rule (the first file naming it wins), and its cluster's server and CA.
pub fn find(loaded: &[(PathBuf, Kubeconfig)], context: &str) -> Result<Found, CliError> {
    let (file, named) = loaded
        .iter()
        .find_map(|(file, kc)| {
            kc.contexts
                .iter()
                .find(|c| c.name == context)
                .map(|c| (file, c))
        })
        .ok_or_else(|| {
            CliError::Usage(format!(
                "context {context:?} is not in the kubeconfig (contexts: {})",
                context_names(loaded)
            ))
        })?;
    let cluster_ref = named
        .context
        .as_ref()
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = loaded
        .iter()
        .find_map(|(_, kc)| {
            kc.clusters
                .iter()
                .find(|c| c.name == cluster_ref)
                .and_then(|c| c.cluster.clone())
        })
        .ok_or_else(|| {
            CliError::Usage(format!(
                "context {context:?} names cluster {cluster_ref:?}, which the kubeconfig does not define"
            ))
        })?;
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "cluster {cluster_ref:?} of context {context:?} has no server address in {}",
                file.display()
            ))
        })?;
    let ca = describe_ca(&cluster, file, context);
    let name = sanitize(context).ok_or_else(|| {
        CliError::Usage(format!(
            "context {context:?} has no letters or digits to name a cluster after; rename the context (kubectl config rename-context)"
        ))
    })?;
    Ok(Found {
        context: context.to_string(),
        name,
        kubeconfig: file.clone(),
        server: server.trim_end_matches('/').to_string(),
        ca,
    })
}

/// The CA the kubeconfig trusts for the API server, as a comment line: subject and expiry, or what is missing.
fn describe_ca(cluster: &kube::config::Cluster, file: &Path, context: &str) -> String {
    let pem = if let Some(data) = &cluster.certificate_authority_data {
        match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => return "certificate-authority-data is not base64".into(),
        }
    } else if let Some(path) = &cluster.certificate_authority {
        let path = file
            .parent()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|| PathBuf::from(path));
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!(
                    "warning: context {context:?}: cannot read its CA file {}: {e}",
                    path.display()
                );
                return format!("unreadable file {}", path.display());
            }
        }
    } else if cluster.insecure_skip_tls_verify == Some(true) {
        eprintln!(
            "warning: context {context:?} skips TLS verification; peers need the API server's CA, so give the kubeconfig one"
        );
        return "none (insecure-skip-tls-verify)".into();
    } else {
        return "the system's trust store".into();
    };
    match meshtrust_pki::parse_certs(&pem, "the kubeconfig's CA") {
        Ok(certs) => certs
            .iter()
            .map(|c| {
                let expires = time::OffsetDateTime::from_unix_timestamp(c.facts.not_after)
                    .map(|t| t.date().to_string())
                    .unwrap_or_else(|_| c.facts.not_after.to_string());
                format!("{:?}, expires {expires}", c.facts.subject_cn)
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("not a certificate ({e})"),
    }
}

/// A DNS label from a context name: lowercase, other characters become '-', at most 63 characters.
pub fn sanitize(context: &str) -> Option<String> {
    let mut out = String::new();
    for ch in context.chars() {
        let ch = ch.to_ascii_lowercase();
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            out.push(ch);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

/// A kubeconfig path as the mesh file stores it: relative to the mesh file's directory when inside it.
fn kubeconfig_ref(kubeconfig: &Path, base: &Path) -> String {
    kubeconfig
        .strip_prefix(base)
        .unwrap_or(kubeconfig)
        .display()
        .to_string()
}

/// A YAML double-quoted scalar (JSON's string form is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub fn mesh_text(found: &[Found], openbao: Option<&str>, mesh_id: &str, base: &Path) -> String {
    let mut out = String::new();
    out.push_str(
        "# The mesh file, written by `meshtrust init`; the reference is docs/mesh-file.md.\n\
         # Every field left out has a default; `meshtrust plan` shows what apply would do with it.\n\
         apiVersion: meshtrust.dev/v1\n\
         kind: Mesh\n",
    );
    out.push_str(&format!(
        "# Istio's global.meshID; it also names the CA subjects.\nmeshID: {mesh_id}\n"
    ));
    out.push_str("openbao:\n");
    match openbao {
        Some(address) => out.push_str(&format!(
            "  # BAO_ADDR, when set, wins over this address (as with the bao CLI).\n  address: {}\n",
            quoted(address)
        )),
        None => out.push_str(
            "  # No --openbao given: BAO_ADDR is used. Or set it here:\n  # address: https://openbao.example.internal:8200\n",
        ),
    }
    out.push_str(
        "  # namespace: production   # an OpenBao namespace, if you use one\n  # kvMount: secret\n\
         ca:\n  # bao-pki: the root key stays inside OpenBao and every cluster gets its own intermediate.\n  mode: bao-pki\n\
         clusters:\n",
    );
    for f in found {
        out.push_str(&format!(
            "  # from kubeconfig context {}\n  - name: {}\n    kubeconfig: {}\n    context: {}\n",
            quoted(&f.context),
            f.name,
            quoted(&kubeconfig_ref(&f.kubeconfig, base)),
            quoted(&f.context),
        ));
        out.push_str(&format!(
            "    # Istio's network: clusters that reach each other's pods directly share one; others go through\n    # the east-west gateway.\n    network: network-{}\n",
            f.name
        ));
        out.push_str(&format!(
            "    # The API address as the OTHER clusters reach it (the kubeconfig's server). A loopback address\n    # works only when every cluster runs on this machine. API server CA: {}\n    apiServer: {}\n",
            f.ca,
            quoted(&f.server)
        ));
    }
    out
}

/// Creates `path` with `text`, refusing to replace an existing file.
fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CliError::Usage(format!(
                    "{} already exists; meshtrust init never overwrites a file: pass another --out or remove it",
                    path.display()
                ))
            } else {
                CliError::Usage(format!("cannot create {}: {e}", path.display()))
            }
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(dir: &Path, file: &str, contexts: &[(&str, &str)]) -> PathBuf {
        let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        for (_, server) in contexts {
            let name = server.replace([':', '/', '.'], "_");
            text.push_str(&format!(
                "- name: {name}\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n"
            ));
        }
        text.push_str("contexts:\n");
        for (ctx, server) in contexts {
            let name = server.replace([':', '/', '.'], "_");
            text.push_str(&format!(
                "- name: {ctx}\n  context:\n    cluster: {name}\n    user: u\n"
            ));
        }
        text.push_str(&format!(
            "current-context: {}\nusers:\n- name: u\n  user:\n    token: t\n",
            contexts[0].0
        ));
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn loaded(paths: &[PathBuf]) -> Vec<(PathBuf, Kubeconfig)> {
        load(paths).expect("load")
    }

    #[test]
    fn context_names_become_dns_labels() {
        assert_eq!(sanitize("kind-a").as_deref(), Some("kind-a"));
        assert_eq!(
            sanitize("arn:aws:eks:eu-west-1:123:cluster/Prod_East").as_deref(),
            Some("arn-aws-eks-eu-west-1-123-cluster-prod-east")
        );
        assert_eq!(sanitize("--x--").as_deref(), Some("x"));
        assert_eq!(sanitize("@@@"), None);
        let long = "a".repeat(70);
        assert_eq!(sanitize(&long).map(|s| s.len()), Some(63));
    }

    #[test]
    fn the_written_file_loads_with_the_mesh_loader() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = kubeconfig(
            dir.path(),
            "a.yaml",
            &[("kind-a", "https://127.0.0.1:6443")],
        );
        let b = kubeconfig(
            dir.path(),
            "b.yaml",
            &[("Kind_B", "https://10.0.0.2:6443/")],
        );
        let loaded = loaded(&[a, b]);
        let found = vec![
            find(&loaded, "kind-a").expect("a"),
            find(&loaded, "Kind_B").expect("b"),
        ];
        assert_eq!(found[1].name, "kind-b");
        assert_eq!(found[1].server, "https://10.0.0.2:6443");
        let base = absolute(dir.path());
        let text = mesh_text(&found, Some("https://bao.example:8200"), "mesh1", &base);
        let mesh = Mesh::from_yaml(&text, "mesh.yaml", base.clone()).expect("loads");
        assert_eq!(mesh.clusters.len(), 2);
        let b = mesh.cluster("kind-b").expect("kind-b");
        assert_eq!(b.context.as_deref(), Some("Kind_B"));
        assert_eq!(b.network, "network-kind-b");
        assert_eq!(b.kubeconfig.as_deref(), Some(base.join("b.yaml").as_path()));
        assert_eq!(
            mesh.openbao.address.as_deref(),
            Some("https://bao.example:8200")
        );
        assert!(
            text.contains("# from kubeconfig context \"Kind_B\""),
            "{text}"
        );
        assert!(text.contains("insecure-skip-tls-verify"), "{text}");
    }

    #[test]
    fn an_unknown_context_lists_the_known_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = kubeconfig(dir.path(), "a.yaml", &[("kind-a", "https://127.0.0.1:1")]);
        let err = find(&loaded(&[a]), "kind-z")
            .expect_err("unknown")
            .to_string();
        assert_eq!(
            err,
            "context \"kind-z\" is not in the kubeconfig (contexts: kind-a)"
        );
    }

    #[test]
    fn the_first_file_naming_a_context_wins_as_in_kubectl() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = kubeconfig(dir.path(), "a.yaml", &[("c", "https://one:1")]);
        let b = kubeconfig(dir.path(), "b.yaml", &[("c", "https://two:2")]);
        let found = find(&loaded(&[a, b]), "c").expect("c");
        assert_eq!(found.server, "https://one:1");
        assert!(found.kubeconfig.ends_with("a.yaml"));
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, "mine").expect("write");
        let err = write_new(&path, "new").expect_err("refused").to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "mine");
    }
}

//! The Helm chart as the tests render it: the helm binary `scripts/build-helm` caches (a clear failure naming
//! the script when it is missing), `helm template` and its YAML documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn chart() -> PathBuf {
    repo().join("charts/meshtrust-agent")
}

/// The helm binary `scripts/build-helm` caches; a clear failure naming the script when it is missing.
pub fn helm() -> Command {
    let out = Command::new("bash")
        .arg(repo().join("scripts/build-helm"))
        .arg("print-path")
        .output()
        .expect("run scripts/build-helm print-path");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "helm is not installed at {}: run scripts/build-helm (scripts/test does) to build it from its Go module",
        path.display()
    );
    let mut cmd = Command::new(path);
    // Helm keeps its cache and config out of the user's home.
    let home = std::env::temp_dir().join("meshtrust-chart-test-helm");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

pub fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        })
        .map(|d| serde_saphyr::from_str::<Value>(d).expect("each document parses"))
        .collect()
}

/// `helm template` of the chart for `cluster` in `namespace` with the mesh file and extra `--set`s.
pub fn template(namespace: &str, cluster: &str, mesh: &Path, sets: &[&str]) -> Vec<Value> {
    let mut cmd = helm();
    cmd.arg("template")
        .arg("meshtrust-agent")
        .arg(chart())
        .args(["--namespace", namespace, "--set"])
        .arg(format!("cluster={cluster}"))
        .arg("--set-file")
        .arg(format!("mesh={}", mesh.display()));
    for s in sets {
        cmd.args(["--set", s]);
    }
    documents(&run(cmd))
}

pub fn kinds(objects: &[Value]) -> Vec<&str> {
    objects.iter().filter_map(|o| o["kind"].as_str()).collect()
}

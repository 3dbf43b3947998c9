//! A Secret projected into a directory the way kubelet's atomic writer does it: each version of the data goes
//! into a new timestamped directory, `..data` is a symlink swapped atomically (rename) to the newest one, and every
//! key is a symlink `<key> -> ..data/<key>`. istiod watches `./etc/cacerts` for exactly these events.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::watcher;

use crate::TestEnvError;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Writes one version of `data` into `dir` and makes it current with a single rename of `..data`.
pub(crate) fn project(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> Result<(), TestEnvError> {
    std::fs::create_dir_all(dir).map_err(TestEnvError::io(dir))?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let version = format!("..{stamp}");
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir).map_err(TestEnvError::io(&version_dir))?;
    for (key, value) in data {
        let path = version_dir.join(key);
        std::fs::write(&path, value).map_err(TestEnvError::io(&path))?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&version, &tmp).map_err(TestEnvError::io(&tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(TestEnvError::io(dir.join(DATA)))?;
    for key in data.keys() {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(key), &link).map_err(TestEnvError::io(&link))?;
        }
    }
    // Keys gone from the Secret lose their symlink, as with kubelet.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with("..") && !data.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(old) = old
        && old != Path::new(&version)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Projects `namespace/name` once (it must exist: istiod only runs in plugged mode if the files are there when it
/// starts), then keeps projecting every change from a watch until the returned task is aborted.
pub(crate) async fn project_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> Result<tokio::task::JoinHandle<()>, TestEnvError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = api.get(name).await.map_err(|e| {
        TestEnvError::Kube(format!(
            "Secret {namespace}/{name} must exist before istiod starts (run `meshtrust apply` first): {e}"
        ))
    })?;
    let mut current = secret_data(&secret);
    project(dir, &current)?;
    let dir = dir.to_path_buf();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    Ok(tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(event) = events.next().await {
            let secret = match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                _ => continue,
            };
            let data = secret_data(&secret);
            if data != current {
                if let Err(e) = project(&dir, &data) {
                    eprintln!("projecting {}: {e}", dir.display());
                }
                current = data;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_version_swaps_data_and_keeps_key_links() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("cacerts");
        let v1 = BTreeMap::from([("a.pem".to_string(), b"one".to_vec())]);
        project(&dir, &v1).expect("v1");
        assert_eq!(std::fs::read(dir.join("a.pem")).expect("read"), b"one");
        let first = std::fs::read_link(dir.join(DATA)).expect("link");
        let v2 = BTreeMap::from([("b.pem".to_string(), b"two".to_vec())]);
        project(&dir, &v2).expect("v2");
        assert_ne!(std::fs::read_link(dir.join(DATA)).expect("link"), first);
        assert!(!dir.join(&first).exists(), "old version removed");
        assert!(std::fs::symlink_metadata(dir.join("a.pem")).is_err());
        assert_eq!(
            std::fs::read_link(dir.join("b.pem")).expect("key link"),
            Path::new("..data/b.pem")
        );
        assert_eq!(std::fs::read(dir.join("b.pem")).expect("read"), b"two");
    }
}

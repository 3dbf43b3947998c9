use std::time::Duration;

use crate::certs::ClusterPki;

/// One readiness probe: true if `url` answers 2xx. With `pki`, it trusts that cluster's CA and presents the
/// admin certificate. Builds and drops its own blocking client, so call it off any async runtime.
pub(crate) fn http_ok(pki: Option<&ClusterPki>, url: &str) -> bool {
    let Some(client) = client(pki) else {
        return false;
    };
    client
        .get(url)
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// A GET as that cluster's admin, parsed as JSON; `None` on any failure. Blocking: call it off any runtime.
pub(crate) fn get_json(pki: &ClusterPki, url: &str) -> Option<serde_json::Value> {
    let response = client(Some(pki))?.get(url).send().ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_str(&response.text().ok()?).ok()
}

fn client(pki: Option<&ClusterPki>) -> Option<reqwest::blocking::Client> {
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3));
    if let Some(pki) = pki {
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).ok()?;
        let pem = format!("{}{}", pki.admin_cert_pem, pki.admin_key_pem);
        let identity = reqwest::Identity::from_pem(pem.as_bytes()).ok()?;
        builder = builder.tls_certs_only([ca]).identity(identity);
    }
    builder.build().ok()
}

/// One JSON call to a plain-HTTP server (OpenBao's init and unseal). Runs on a scoped thread, so it is safe to
/// call from inside an async test. `None` on any failure.
pub(crate) fn http_json(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> Option<serde_json::Value> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .ok()?;
            let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
            let mut request = client
                .request(method, url)
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(token) = token {
                request = request.header("X-Vault-Token", token);
            }
            let response = request.send().ok()?;
            if !response.status().is_success() {
                return None;
            }
            let text = response.text().ok()?;
            Some(if text.trim().is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text).ok()?
            })
        })
        .join()
        .ok()
        .flatten()
    })
}

/// The HTTP status of a plain-HTTP GET (OpenBao's `sys/health`: 200 active, 429 standby), or `None`.
pub(crate) fn http_status(url: &str) -> Option<u16> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .ok()?;
            Some(client.get(url).send().ok()?.status().as_u16())
        })
        .join()
        .ok()
        .flatten()
    })
}

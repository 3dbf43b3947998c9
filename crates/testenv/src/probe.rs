use std::time::Duration;

use crate::certs::ClusterPki;

/// One readiness probe: true if `url` answers 2xx. With `pki`, it trusts that cluster's CA and presents the
/// admin certificate. Builds and drops its own blocking client, so call it off any async runtime.
pub(crate) fn http_ok(pki: Option<&ClusterPki>, url: &str) -> bool {
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3));
    if let Some(pki) = pki {
        let Ok(ca) = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()) else {
            return false;
        };
        let pem = format!("{}{}", pki.admin_cert_pem, pki.admin_key_pem);
        let Ok(identity) = reqwest::Identity::from_pem(pem.as_bytes()) else {
            return false;
        };
        builder = builder.tls_certs_only([ca]).identity(identity);
    }
    let Ok(client) = builder.build() else {
        return false;
    };
    client
        .get(url)
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

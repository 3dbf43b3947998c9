//! Simulated peers: clusters that exist only in OpenBao, each with a published kubeconfig, written the way a
//! peer's agent publishes it. `publish` is the one place that knows main's change-detection protocol; after a
//! redesign of that protocol, change it here (and only here) so the benchmark measures what agents really write.

use std::collections::BTreeMap;

use base64::Engine;

use meshtrust_bao::{OpenBaoClient, OpenBaoConfig};
use meshtrust_core::ports::{ErrorKind, OpenBao};
use meshtrust_core::secret::SecretBytes;
use meshtrust_engine::published::{CONFIG_HASH_FIELD, SERVER_FIELD, TOKEN_EXPIRES_FIELD};

const KV: &str = "secret";
const KV_PATH: &str = "istio/remote-secrets";
/// The change marker every publisher bumps (remoteSecrets.indexPath's default).
const MARKER_PATH: &str = "istio/meshtrust-index";

/// `ca.rootRotation.phaseDwell` of the benchmark's mesh file.
pub const DWELL_SECS: u64 = 5;

pub fn name(i: usize) -> String {
    format!("peer-{i}")
}

pub fn root_client(addr: &str, token: &str) -> OpenBaoClient {
    OpenBaoClient::new(OpenBaoConfig {
        address: addr.to_string(),
        token: token.to_string(),
        namespace: None,
        ca_cert_pem: None,
        allow_insecure_http: false,
        addresses: vec![],
    })
    .expect("OpenBao client")
}

/// The kubeconfig a peer publishes in generation `generation`, of the size and shape istioctl writes: the
/// peer's API server CA (a real RSA-2048 certificate, base64) and a reader token shaped like a Kubernetes
/// ServiceAccount token (RS256 JWT; the generation is in its claims, so every generation differs). About 2.5 KB.
pub fn kubeconfig(peer: &str, generation: u64) -> String {
    let ca = peer_ca(peer);
    let token = token(peer, generation);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://{peer}.api.example.internal:6443\n  name: {peer}\ncontexts:\n- context:\n    cluster: {peer}\n    user: {peer}\n  name: {peer}\ncurrent-context: {peer}\nkind: Config\npreferences: {{}}\nusers:\n- name: {peer}\n  user:\n    token: {token}\n"
    )
}

/// One RSA-2048 key signs every simulated peer's CA certificate (generating a key per peer would take
/// minutes; the certificates differ, which is what a reader holds).
fn ca_key() -> &'static rcgen::KeyPair {
    static KEY: std::sync::OnceLock<rcgen::KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .expect("RSA key")
    })
}

/// A peer's API server CA as kubeadm makes it (CN=kubernetes, 10 years), base64 of its PEM; made once per peer.
fn peer_ca(peer: &str) -> String {
    static CAS: std::sync::Mutex<BTreeMap<String, String>> = std::sync::Mutex::new(BTreeMap::new());
    let mut cas = CAS.lock().unwrap_or_else(|p| p.into_inner());
    cas.entry(peer.to_string())
        .or_insert_with(|| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "kubernetes");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_before = time::OffsetDateTime::now_utc();
            params.not_after = params.not_before + time::Duration::days(3650);
            params.serial_number = Some(rcgen::SerialNumber::from_slice(peer.as_bytes()));
            let cert = params.self_signed(ca_key()).expect("CA certificate");
            base64::engine::general_purpose::STANDARD.encode(cert.pem())
        })
        .clone()
}

/// A token with the shape and size of a projected ServiceAccount token: base64url header and claims, and a
/// 256-byte RS256 signature (random bytes: nobody verifies it here).
fn token(peer: &str, generation: u64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let header = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(43));
    let iat = 1_767_225_600 + generation;
    let claims = format!(
        r#"{{"aud":["https://kubernetes.default.svc.cluster.local"],"exp":{},"iat":{iat},"iss":"https://kubernetes.default.svc.cluster.local","jti":"{peer}-{generation}","kubernetes.io":{{"namespace":"istio-system","serviceaccount":{{"name":"istio-reader-service-account","uid":"5f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b"}}}},"nbf":{iat},"sub":"system:serviceaccount:istio-system:istio-reader-service-account"}}"#,
        iat + 31_536_000
    );
    let signature: Vec<u8> = (0..256u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ generation as u32) as u8)
        .collect();
    format!(
        "{}.{}.{}",
        B64.encode(header),
        B64.encode(claims),
        B64.encode(signature)
    )
}

/// A peer's published entry, with the fields meshtrust's engine reads (crates/engine/src/published.rs).
fn entry(peer: &str, generation: u64) -> BTreeMap<String, SecretBytes> {
    BTreeMap::from([
        (
            peer.to_string(),
            SecretBytes::new(kubeconfig(peer, generation)),
        ),
        (
            SERVER_FIELD.to_string(),
            SecretBytes::new("https://127.0.0.1:1"),
        ),
        (
            TOKEN_EXPIRES_FIELD.to_string(),
            SecretBytes::new("4000000000"),
        ),
        (CONFIG_HASH_FIELD.to_string(), SecretBytes::new("simulated")),
    ])
}

/// Bumps the change marker naming `peer` (and, for trust facts, what it wrote), with check-and-set (retried
/// when another writer won).
pub async fn bump_marker(bao: &OpenBaoClient, peer: &str, trust: bool) -> Result<(), String> {
    let mut data = BTreeMap::from([("cluster".to_string(), SecretBytes::new(peer))]);
    if trust {
        data.insert("wrote".to_string(), SecretBytes::new("trust"));
    }
    for _ in 0..8 {
        let cas = bao
            .kv_metadata(KV, MARKER_PATH)
            .await
            .map_err(|e| e.to_string())?
            .map(|m| m.current_version)
            .unwrap_or(0);
        match bao.kv_put(KV, MARKER_PATH, &data, cas).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the change marker kept changing while {peer} published"
    ))
}

/// Publishes every peer's first kubeconfig (its own entry each, as its agent would), then bumps the marker once.
pub async fn publish_all(bao: &OpenBaoClient, peers: usize) -> Result<(), String> {
    for i in 0..peers {
        let p = name(i);
        bao.kv_put(KV, &format!("{KV_PATH}/{p}"), &entry(&p, 0), 0)
            .await
            .map_err(|e| format!("publishing {p}: {e}"))?;
    }
    if peers > 0 {
        bump_marker(bao, &name(peers - 1), false).await?;
    }
    Ok(())
}

/// A peer publishes a new kubeconfig version, as its agent does: its own entry with check-and-set, then a bump
/// of the change marker naming it.
pub async fn publish(bao: &OpenBaoClient, peer: &str, generation: u64) -> Result<(), String> {
    let path = format!("{KV_PATH}/{peer}");
    let current = bao
        .kv_metadata(KV, &path)
        .await
        .map_err(|e| e.to_string())?
        .map(|m| m.current_version)
        .unwrap_or(0);
    bao.kv_put(KV, &path, &entry(peer, generation), current)
        .await
        .map_err(|e| e.to_string())?;
    bump_marker(bao, peer, false).await
}

/// The mesh file: the real cluster `cluster-a` and `peers` simulated ones whose API servers nobody dials. A
/// short rotation dwell lets the rotated rows finish a rotation within the run.
pub fn mesh_file(kubeconfig: &std::path::Path, peers: usize) -> String {
    let mut text = format!(
        "apiVersion: meshtrust.dev/v1\nkind: Mesh\nca:\n  rootRotation:\n    phaseDwell: {DWELL_SECS}s\nclusters:\n  - name: cluster-a\n    kubeconfig: {}\n",
        kubeconfig.display()
    );
    for i in 0..peers {
        text.push_str(&format!(
            "  - name: {}\n    apiServer: https://127.0.0.1:1\n",
            name(i)
        ));
    }
    text
}

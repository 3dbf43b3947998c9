//! The gauges the chart's alerts compare: when the intermediate and its root (secret="cacerts/root"), the
//! agent's OpenBao token and each peer's published reader token expire, whether each peer's remote secret lags, and the mesh file's lifetimes
//! and renewal thresholds they are judged against (so the rules follow the mesh file).

use meshtrust_core::mesh::Mesh;
use meshtrust_engine::PeerSync;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabel {
    secret: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabel {
    setting: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Debug)]
pub struct Horizons {
    certificate_expiry: Family<SecretLabel, Gauge>,
    token_expiry: Gauge,
    token_ttl: Gauge,
    settings: Family<SettingLabel, Gauge>,
    remote_secret_stale: Family<PeerLabel, Gauge>,
    peer_token_expiry: Family<PeerLabel, Gauge>,
}

impl Horizons {
    pub(super) fn register(r: &mut Registry) -> Self {
        let secs = || Some(Unit::Seconds);
        Horizons {
            certificate_expiry: registered(
                r,
                "meshtrust_certificate_expiry_timestamp",
                "Expiry of the CA in each managed cacerts (secret=\"cacerts\") and of the root that signed it (secret=\"cacerts/root\") (Unix time)",
                secs(),
                Family::default(),
            ),
            token_expiry: registered(
                r,
                "meshtrust_openbao_token_expiry_timestamp",
                "Expiry of the agent's OpenBao token (Unix time)",
                secs(),
                Gauge::default(),
            ),
            token_ttl: registered(
                r,
                "meshtrust_openbao_token_ttl",
                "Lifetime OpenBao granted the agent's token at its last login",
                secs(),
                Gauge::default(),
            ),
            settings: registered(
                r,
                "meshtrust_mesh_setting",
                "The mesh file's lifetimes and renewal thresholds, by setting (alerting thresholds)",
                secs(),
                Family::default(),
            ),
            remote_secret_stale: registered(
                r,
                "meshtrust_remote_secret_stale",
                "1 if the remote secret of a peer lags the entry the peer published (or the peer published none)",
                None,
                Family::default(),
            ),
            peer_token_expiry: registered(
                r,
                "meshtrust_peer_token_expiry_timestamp",
                "Expiry of the reader token each peer published (Unix time)",
                secs(),
                Family::default(),
            ),
        }
    }

    pub fn set_certificate_expiry(&self, secret: &str, not_after: i64) {
        self.certificate_expiry
            .get_or_create(&SecretLabel {
                secret: secret.into(),
            })
            .set(not_after);
    }

    /// A login: the token expires at `not_after`, `ttl` seconds after it was granted.
    pub fn set_token_expiry(&self, not_after: i64, ttl: i64) {
        self.token_expiry.set(not_after);
        self.token_ttl.set(ttl);
    }

    /// The thresholds the alerts compare against, named as the mesh file names them.
    pub fn set_mesh_settings(&self, mesh: &Mesh) {
        let settings = [
            ("ca.root.ttl", mesh.ca.root.ttl),
            ("ca.intermediate.ttl", mesh.ca.intermediate.ttl),
            (
                "ca.intermediate.renewBefore",
                mesh.ca.intermediate.renew_before,
            ),
            ("ca.rootRotation.phaseDwell", mesh.ca.phase_dwell),
            ("remoteSecrets.tokenTtl", mesh.remote_secrets.token_ttl),
            (
                "remoteSecrets.refreshBefore",
                mesh.remote_secrets.refresh_before,
            ),
        ];
        for (setting, span) in settings {
            self.settings
                .get_or_create(&SettingLabel {
                    setting: setting.into(),
                })
                .set(i64::try_from(span.seconds()).unwrap_or(i64::MAX));
        }
    }

    /// Each peer's remote secret as the last round found it.
    pub fn set_peer_sync(&self, peers: &[PeerSync]) {
        for sync in peers {
            let label = PeerLabel {
                peer: sync.peer.clone(),
            };
            self.remote_secret_stale
                .get_or_create(&label)
                .set(i64::from(sync.stale));
            if let Some(expires) = sync.token_expires {
                self.peer_token_expiry.get_or_create(&label).set(expires);
            }
        }
    }
}

//! Certificates and keys for meshtrust: key generation and CSRs (rcgen on aws-lc-rs), certificate inspection
//! and chain checks (x509-parser), and Istio's `cacerts` layout. No IO.
#![forbid(unsafe_code)]
// Long functions hide their steps; split them (tests may `#[allow]` this).
#![deny(clippy::too_many_lines)]

pub mod cacerts;
mod cert;
mod error;
pub mod import;
mod key;
pub mod shared_root;

pub use cert::{ParsedCert, cert_facts, parse_certs, signed_by};
pub use error::PkiError;
pub use key::{PrivateKeyPem, generate_key, intermediate_csr, key_matches};

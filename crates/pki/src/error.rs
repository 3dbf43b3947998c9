/// What went wrong with a certificate or key. Messages name the file or field, never its content.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{what}: no PEM CERTIFICATE block found; expected text starting with -----BEGIN CERTIFICATE-----"
    )]
    NoCertificate { what: String },
    #[error("{what}: not valid PEM ({reason})")]
    BadPem { what: String, reason: String },
    #[error("{what}: certificate #{index} does not parse as X.509 ({reason})")]
    BadCertificate {
        what: String,
        index: usize,
        reason: String,
    },
    #[error(
        "{what}: not a private key meshtrust can read ({reason}); expected an unencrypted PKCS#8 PEM key"
    )]
    BadKey { what: String, reason: String },
    #[error("key generation failed: {0}")]
    Generate(String),
}

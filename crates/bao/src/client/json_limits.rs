//! Request bodies a server refuses for their size or shape. Vault checks every JSON body against its
//! listener's limits (nesting depth 300, 10,000 entries per object or array, 500,000 tokens, 1 MiB per string,
//! 32 MiB per request) and answers a violation with HTTP 500, which would otherwise read as "server down, try
//! again". OpenBao refuses over-complex input with its own sentence. Either way the same body fails again, so
//! it is an invalid request, named, not a transient error.

use meshtrust_core::ports::{ErrorKind, PortError};
use reqwest::StatusCode;

use crate::client::error;

/// Vault's (`sdk/helper/jsonutil`) and OpenBao's messages for a body over the limits.
const LIMIT_MESSAGES: &[&str] = &[
    "exceeds allowed token count",
    "exceeds allowed element count",
    "exceeds allowed nesting depth",
    "exceeds allowed entry count",
    "exceeds allowed length",
    "request body too large",
    "refused JSON input due to high complexity",
];

/// True when the server's error message says the request body broke a size or shape limit.
pub(super) fn refused_body(message: &str) -> bool {
    LIMIT_MESSAGES.iter().any(|m| message.contains(m))
}

pub(super) fn error_for(operation: &str, status: StatusCode, message: &str) -> PortError {
    error(
        ErrorKind::Invalid,
        operation,
        format!(
            "the server refused the request body as too large or too complex (HTTP {status}: {message}); sending \
             it again cannot help. Vault limits JSON bodies per listener (max_request_size, max_json_*); raise \
             them there, or make the mesh smaller"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_limit_messages_count() {
        for limit in [
            "JSON string value exceeds allowed length",
            "JSON object exceeds allowed entry count",
            "error reading JSON token: http: request body too large",
            "refused JSON input due to high complexity",
        ] {
            assert!(refused_body(limit), "{limit}");
        }
        for other in [
            "internal error",
            "local node not active",
            "no error message",
        ] {
            assert!(!refused_body(other), "{other}");
        }
    }
}

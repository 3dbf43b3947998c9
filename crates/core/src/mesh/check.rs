//! Shared checks for the section validators: the problem collector and the field-level rules.

use super::{KeySpec, KeyType, Problem};
use crate::duration::Span;

/// Collects every problem instead of stopping at the first, so one run shows the whole list to fix.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn span(&mut self, path: &str, value: Option<&str>, default: &str) -> Span {
        match Span::parse(value.unwrap_or(default)) {
            Ok(span) if span.0 > 0 => span,
            Ok(_) => {
                self.problem(path, "must be longer than zero");
                Span(1)
            }
            Err(e) => {
                self.problem(path, e);
                Span(1)
            }
        }
    }

    /// Free text that reaches a certificate subject and, for the intermediate's organization, an OpenBao policy.
    /// Quotes, backslashes and control characters could end an HCL string and add rules; `*` is a glob in a
    /// policy's allowed values; `${` starts HCL interpolation. None belongs in a subject, so all are refused.
    pub(super) fn plain_text(&mut self, path: &str, value: &str) {
        let bad = value
            .chars()
            .find(|c| c.is_control() || matches!(c, '"' | '\\' | '*'))
            .map(|c| format!("{c:?}"))
            .or_else(|| value.contains("${").then(|| "\"${\"".to_string()));
        if let Some(bad) = bad {
            self.problem(
                path,
                format!("{value:?} contains {bad}; use letters, digits, spaces and plain punctuation, without quotes, backslashes, '*', '${{' or control characters"),
            );
        } else if value.trim().is_empty() || value.len() > 64 {
            self.problem(
                path,
                "must be 1 to 64 characters (an X.509 subject field's limit)",
            );
        }
    }

    pub(super) fn key(
        &mut self,
        path: &str,
        key_type: Option<&str>,
        bits: Option<u32>,
        default: KeySpec,
    ) -> KeySpec {
        let key_type = match key_type {
            None => default.key_type,
            Some("rsa") => KeyType::Rsa,
            Some("ec") => KeyType::Ec,
            Some(other) => {
                self.problem(
                    format!("{path}.keyType"),
                    format!("{other:?} is not supported; use \"rsa\" or \"ec\""),
                );
                default.key_type
            }
        };
        let default_bits = if key_type == default.key_type {
            default.bits
        } else if key_type == KeyType::Rsa {
            4096
        } else {
            256
        };
        let bits = bits.unwrap_or(default_bits);
        let ok = match key_type {
            KeyType::Rsa => [2048, 3072, 4096].contains(&bits),
            KeyType::Ec => [256, 384].contains(&bits),
        };
        if !ok {
            let allowed = if key_type == KeyType::Rsa {
                "2048, 3072 or 4096"
            } else {
                "256 or 384 (istiod accepts P-256 and P-384)"
            };
            self.problem(
                format!("{path}.keyBits"),
                format!("{bits} is not valid for {key_type}; use {allowed}"),
            );
        }
        KeySpec { key_type, bits }
    }
}

/// A DNS-1123 label, as Kubernetes object names and Istio cluster IDs need.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn is_mount_path(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.ends_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
}

//! Shared checks for the section validators: the problem collector and the field-level rules.

use super::{KeySpec, KeyType, Problem};
use crate::duration::Span;

/// The longest lifetime any mesh-file duration may have (100 years). Every timestamp meshtrust computes is
/// `now + span`; this bound keeps it inside X.509's GeneralizedTime and far from `i64` overflow.
pub const MAX_SPAN: Span = Span(100 * 365 * 86_400);

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
            Ok(span) if span > MAX_SPAN => {
                self.problem(
                    path,
                    format!("{span} is longer than {MAX_SPAN} (100 years), the most meshtrust accepts: certificates cannot outlive year 9999 and timestamps must not overflow"),
                );
                Span(1)
            }
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
            .find(|c| c.is_control() || matches!(c, '"' | '\\' | '*' | '$' | '%' | '{' | '}'))
            .map(|c| format!("{c:?}"))
            .or_else(|| value.contains("${").then(|| "\"${\"".to_string()));
        if let Some(bad) = bad {
            self.problem(
                path,
                format!("{value:?} contains {bad}; use letters, digits, spaces and plain punctuation, without quotes, backslashes, '*', '$', '%', braces or control characters (these names go into OpenBao policies)"),
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

/// Words YAML 1.1 (which Kubernetes' Go YAML codec still follows) reads as booleans or null when unquoted.
const YAML_KEYWORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// A name that YAML reads back as the same string when written unquoted: it starts with a letter (so no
/// `123`, `1e3`, `0x1f`) and is not a YAML keyword (`true`, `null`, `on`, ...). Names written into
/// kubeconfigs and Helm values must pass, or a cluster called `123` becomes the number 123 there.
pub(super) fn is_yaml_plain(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !YAML_KEYWORDS.contains(&s.to_ascii_lowercase().as_str())
}

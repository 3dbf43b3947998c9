//! Bytes that may be key material or credentials. They can be compared and moved, never printed: `Debug`
//! shows only their length, and there is no `Display`.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretBytes(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as UTF-8, for PEM and kubeconfig text.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        // Best effort: overwrite before the allocation is freed.
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_content() {
        let s = SecretBytes::new(b"-----BEGIN PRIVATE KEY-----".to_vec());
        let shown = format!("{s:?}");
        assert!(!shown.contains("PRIVATE"));
        assert!(shown.contains("27 bytes"));
    }
}

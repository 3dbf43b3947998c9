//! What callers (the CLI, the agent) learn from a run: the changes made, in words, never internals.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AppliedChange {
    pub resource: String,
    pub target: String,
    /// What was done, with serials and fingerprints (never key material).
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub applied: Vec<AppliedChange>,
    pub warnings: Vec<String>,
}

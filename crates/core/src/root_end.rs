//! A root's end bounds every intermediate it signs. Vault cuts a signed intermediate to end with its root (with
//! a warning in the answer); OpenBao lets it outlive the root, but no verifier accepts the chain past the
//! root's end either. So once the root has less life left than `ca.intermediate.renewBefore`, a renewed
//! intermediate would be due again at once: without this check every run re-issues (a loop on Vault).
//!
//! The rule: an intermediate due for renewal is re-issued only if the new one would end later than the current
//! one; otherwise the root must be rotated, and plan, status and verify say so with the date.

use crate::duration::{Span, relative, rfc3339};
use crate::facts::{CertFacts, OpenBaoFacts};
use crate::mesh::Mesh;

/// Below this, a "later" end is the same end (the servers round to the second).
const NO_GAIN_SECONDS: i64 = 60;

/// When an intermediate signed now with `ttl` would end: at `now + ttl`, or at the root's end if that comes
/// first.
pub fn new_intermediate_end(now: i64, ttl: Span, root_not_after: i64) -> i64 {
    now.saturating_add(ttl.seconds() as i64).min(root_not_after)
}

/// Whether renewing an intermediate that ends at `current_not_after` would give one that ends later; `false`
/// means the root's end is the limit and only a root rotation helps.
pub fn renewal_extends(current_not_after: i64, now: i64, ttl: Span, root_not_after: i64) -> bool {
    let full_term = now.saturating_add(ttl.seconds() as i64);
    // The root does not cut a new one short: a full term always ends later than one already due.
    full_term <= root_not_after
        || new_intermediate_end(now, ttl, root_not_after)
            > current_not_after.saturating_add(NO_GAIN_SECONDS)
}

/// The root that would sign a renewal, by generation, if OpenBao holds it.
pub fn root_end(openbao: &OpenBaoFacts, generation: u32) -> Option<i64> {
    openbao
        .roots
        .iter()
        .find(|r| r.generation == generation)
        .map(|r| r.cert.not_after)
}

/// A sentence for plan, status and verify when the newest root ends within `renewBefore` (intermediates can no
/// longer be renewed for a full term), with the date; `None` while it has longer.
pub fn root_end_warning(mesh: &Mesh, openbao: &OpenBaoFacts, now: i64) -> Option<String> {
    let root = openbao.newest_root()?;
    let renew_before = mesh.ca.intermediate.renew_before;
    let left = root.cert.not_after.saturating_sub(now);
    if left >= renew_before.seconds() as i64 {
        return None;
    }
    Some(warning_text(
        &root.issuer_name(),
        &root.cert,
        now,
        renew_before,
    ))
}

fn warning_text(name: &str, cert: &CertFacts, now: i64, renew_before: Span) -> String {
    let end = rfc3339(cert.not_after);
    if cert.not_after <= now {
        return format!(
            "root {name} (serial {}) ended on {end} ({}): every intermediate it signed has stopped verifying; \
             rotate the root now with `meshtrust ca rotate-root`",
            cert.serial,
            relative(cert.not_after, now)
        );
    }
    format!(
        "root {name} (serial {}) ends on {end} ({}), within ca.intermediate.renewBefore {renew_before}: \
         intermediates cannot outlive it, so they are not renewed past that date; rotate the root before {end} \
         with `meshtrust ca rotate-root`",
        cert.serial,
        relative(cert.not_after, now)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_root_with_less_left_than_the_ttl_caps_the_new_end() {
        let ttl = Span(365 * DAY as u64);
        assert_eq!(new_intermediate_end(0, ttl, 30 * DAY), 30 * DAY);
        assert_eq!(new_intermediate_end(0, ttl, 3650 * DAY), 365 * DAY);
    }

    #[test]
    fn renewal_stops_once_the_intermediate_ends_with_its_root() {
        let ttl = Span(365 * DAY as u64);
        let root_end = 30 * DAY;
        // A year-long intermediate with 20 days left, root ends in 30: renewing gives 10 more days.
        assert!(renewal_extends(20 * DAY, 0, ttl, root_end));
        // Cut to the root's end (Vault), or outliving it (OpenBao): nothing to gain, whenever asked.
        assert!(!renewal_extends(root_end, 0, ttl, root_end));
        assert!(!renewal_extends(root_end, 29 * DAY, ttl, root_end));
        assert!(!renewal_extends(root_end + 300 * DAY, 0, ttl, root_end));
        // Seconds of difference are the same end.
        assert!(!renewal_extends(root_end - 5, 0, ttl, root_end));
        // No root in the way: a renewal always ends later than a certificate already due, even by seconds
        // (a 120 s intermediate renewed 3 s after issue).
        assert!(renewal_extends(40 * DAY, 10 * DAY, ttl, i64::MAX));
        assert!(renewal_extends(120, 3, Span(120), 3650 * DAY));
    }
}

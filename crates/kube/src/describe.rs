//! kube-rs errors as sentences. Its `Display` of an API error appends the whole `Status` in debug form, which
//! no person should have to read: here the API's own message and code, or the chain of causes of a transport
//! failure.

use std::error::Error as _;

/// `the API server refused: secrets "x" is forbidden: ... (HTTP 403)` or
/// `cannot reach the API server: client error (Connect): tcp connect error: Connection refused (os error 111)`.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.as_str()
            } else {
                status.message.as_str()
            };
            format!("the API server refused: {message} (HTTP {})", status.code)
        }
        other => format!("cannot reach the API server: {}", transport(other)),
    }
}

/// A watch failure: what the watch was doing and why, through [`describe`].
pub fn describe_watch(error: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error as W;
    match error {
        W::InitialListFailed(e) => format!("the initial list failed: {}", describe(e)),
        W::WatchStartFailed(e) => format!("the watch could not start: {}", describe(e)),
        W::WatchFailed(e) => format!("the watch stream broke: {}", describe(e)),
        W::WatchError(status) => format!(
            "the API server ended the watch: {} (HTTP {})",
            status.message, status.code
        ),
        W::NoResourceVersion => "the API server sent no resourceVersion to resume from".into(),
    }
}

/// A transport failure as its chain of causes; kube's own prefix ("ServiceError: ") is dropped when a cause
/// says more.
pub(crate) fn transport(error: &kube::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    // Each level often repeats its cause's text; keep only what a level adds.
    parts.dedup();
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn an_api_error_is_its_message_and_code_not_a_dump() {
        let e = kube::Error::Api(
            Status::failure("leases \"x\" is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let text = describe(&e);
        assert_eq!(
            text,
            "the API server refused: leases \"x\" is forbidden (HTTP 403)"
        );
        assert!(
            !text.contains("Status {") && !text.contains("Some("),
            "{text}"
        );
    }
}

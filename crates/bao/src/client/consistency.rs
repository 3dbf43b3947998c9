//! Read-your-writes on an OpenBao HA cluster. Standby nodes of OpenBao 2.x on Raft answer reads from their own
//! copy, which lags the active node: measured on a 3-node cluster here, a read through a standby right after a
//! write through it returned the old value 100 times out of 100. Every write's answer carries `X-Vault-Index`;
//! sending the last one back with `X-Vault-Inconsistent: forward-active-node` makes a standby that has not
//! caught up forward the request to the active node instead of answering from stale data. Servers without
//! indexes (dev mode, Vault community edition) send none, and then nothing is added. Vault refuses the
//! forwarding header with 400 unless its configuration allows it (Enterprise): after such an answer the
//! headers are off for good, and the request goes again without them (Vault's standbys forward every request
//! to the active node anyway).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::RequestBuilder;
use reqwest::header::{HeaderMap, HeaderValue};

const INDEX: &str = "X-Vault-Index";
const INCONSISTENT: &str = "X-Vault-Inconsistent";
const FORWARD: &str = "forward-active-node";

/// The storage index of this client's last write, shared by its clones (an agent's login and its session).
#[derive(Debug, Default)]
pub(crate) struct ReadYourWrites {
    last_write: Mutex<Option<HeaderValue>>,
    /// The server refused the headers once: never send them again.
    unsupported: AtomicBool,
}

impl ReadYourWrites {
    /// Asks the node to answer only once it has seen our last write (or to forward to the active node).
    pub(crate) fn require(&self, request: RequestBuilder) -> RequestBuilder {
        match self.last_index() {
            Some(index) => request.header(INDEX, index).header(INCONSISTENT, FORWARD),
            None => request,
        }
    }

    fn last_index(&self) -> Option<HeaderValue> {
        if self.unsupported.load(Ordering::Relaxed) {
            return None;
        }
        self.last_write.lock().ok().and_then(|g| g.clone())
    }

    /// Remembers the index a successful write's answer reports.
    pub(crate) fn record(&self, headers: &HeaderMap) {
        if let Some(index) = headers.get(INDEX)
            && let Ok(mut last) = self.last_write.lock()
        {
            *last = Some(index.clone());
        }
    }

    /// True (and the headers are off from now on) when `response` is the server refusing them: Vault answers
    /// 400 "forwarding via header X-Vault-Inconsistent=forward-active-node disabled in configuration".
    pub(crate) fn refused(&self, response: &crate::Response) -> bool {
        let refused = response.status == reqwest::StatusCode::BAD_REQUEST
            && self.last_index().is_some()
            && crate::client::messages(&response.body).contains("forwarding via header");
        if refused {
            self.unsupported.store(true, Ordering::Relaxed);
            tracing::info!(
                "the server does not take read-your-writes headers (X-Vault-Inconsistent); sending none from now on"
            );
        }
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(state: &ReadYourWrites) -> HeaderMap {
        let client = reqwest::Client::new();
        state
            .require(client.get("http://127.0.0.1:1/"))
            .build()
            .expect("request")
            .headers()
            .clone()
    }

    #[test]
    fn nothing_is_sent_before_a_write_reported_an_index() {
        let state = ReadYourWrites::default();
        assert!(sent(&state).is_empty());
        state.record(&HeaderMap::new());
        assert!(
            sent(&state).is_empty(),
            "an answer without an index changes nothing"
        );
    }

    #[test]
    fn the_last_write_index_is_sent_with_forwarding() {
        let state = ReadYourWrites::default();
        for value in ["first", "second"] {
            let mut answer = HeaderMap::new();
            answer.insert(INDEX, HeaderValue::from_static(value));
            state.record(&answer);
        }
        let headers = sent(&state);
        assert_eq!(
            headers.get(INDEX).map(HeaderValue::as_bytes),
            Some(&b"second"[..])
        );
        assert_eq!(
            headers.get(INCONSISTENT).map(HeaderValue::as_bytes),
            Some(FORWARD.as_bytes())
        );
    }

    #[test]
    fn a_refusal_turns_the_headers_off_for_good() {
        let state = ReadYourWrites::default();
        let refusal = crate::Response {
            status: reqwest::StatusCode::BAD_REQUEST,
            body: serde_json::json!({"errors": ["forwarding via header X-Vault-Inconsistent=forward-active-node disabled in configuration"]}),
        };
        assert!(
            !state.refused(&refusal),
            "without headers sent, it was not our headers that were refused"
        );
        let mut answer = HeaderMap::new();
        answer.insert(INDEX, HeaderValue::from_static("idx"));
        state.record(&answer);
        let other = crate::Response {
            status: reqwest::StatusCode::BAD_REQUEST,
            body: serde_json::json!({"errors": ["invalid role name"]}),
        };
        assert!(!state.refused(&other));
        assert!(!sent(&state).is_empty());
        assert!(state.refused(&refusal));
        state.record(&answer);
        assert!(sent(&state).is_empty(), "off even after a later index");
    }
}

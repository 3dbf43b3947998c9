//! A standby's redirect to the active node. Vault answers 307 with the active node's `api_addr` when it does
//! not forward a request itself (forwarding off, or not yet set up after an election); OpenBao's standbys do
//! the same in some states. reqwest's own redirect following is off, because it would send `X-Vault-Token` to
//! wherever `Location` points: here the request goes again only to a node the operator configured
//! (`BAO_ADDR`, `BAO_ADDRS`, the mesh file), and only once.

use std::sync::atomic::Ordering;

use meshtrust_core::ports::{ErrorKind, PortResult};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::OpenBaoClient;
use crate::client::error;

/// What is needed to send the request again: method, path, namespace, body.
pub(super) type Resend<'a> = (Method, &'a str, Option<&'a str>, Option<&'a Value>);

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// `scheme://host:port` of a URL, with the scheme's default port filled in.
fn origin(url: &Url) -> Option<(String, String, u16)> {
    Some((
        url.scheme().to_string(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

impl OpenBaoClient {
    /// The index of the configured node `location` points at, if any.
    fn configured_node(&self, location: &Url) -> Option<usize> {
        let wanted = origin(location)?;
        self.nodes
            .iter()
            .position(|node| Url::parse(node).ok().and_then(|u| origin(&u)) == Some(wanted.clone()))
    }

    /// `response` itself, or, when it redirects to a configured node, that node's answer to the same request.
    pub(super) async fn follow_redirect(
        &self,
        operation: &str,
        response: reqwest::Response,
        (method, path, namespace, body): Resend<'_>,
    ) -> PortResult<reqwest::Response> {
        if !is_redirect(response.status()) {
            return Ok(response);
        }
        let from = response.url().origin().ascii_serialization();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let refuse = |why: String| {
            error(
                ErrorKind::Invalid,
                operation,
                format!("{from} answered {} and {why}", response.status()),
            )
        };
        let Ok(target) = Url::parse(&location) else {
            return Err(refuse(format!(
                "a Location that is not an absolute URL ({location:?}); meshtrust follows redirects only to the configured nodes"
            )));
        };
        let target_origin = target.origin().ascii_serialization();
        let Some(index) = self
            .configured_node(&target)
            .filter(|_| target_origin != from)
        else {
            return Err(refuse(format!(
                "redirected to {target_origin}, which is not one of the configured nodes ({}); meshtrust did not \
                 follow it, so the token was not sent there. If it is a node of your cluster (the active node), \
                 list every node in BAO_ADDRS; otherwise check BAO_ADDR",
                self.nodes.join(" ")
            )));
        };
        let node = &self.nodes[index];
        let again = self
            .send_to(node, method, path, namespace, body)
            .await
            .map_err(|e| super::unreachable(operation, node, &e))?;
        if is_redirect(again.status()) {
            return Err(refuse(format!(
                "redirected to {node}, which redirected again ({}); the nodes disagree on which is active, try again in a moment",
                again.status()
            )));
        }
        self.current.store(index, Ordering::Relaxed);
        Ok(again)
    }
}

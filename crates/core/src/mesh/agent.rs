//! The `agent` section: the agent's ServiceAccount identity and its OpenBao token lifetime.

use super::AgentSettings;
use super::check::{Checker, is_dns_label};
use super::schema::RawAgent;
use crate::names::AGENT_NAME;

pub(super) fn validate(raw: RawAgent, c: &mut Checker) -> AgentSettings {
    let agent = AgentSettings {
        service_account: raw.service_account.unwrap_or_else(|| AGENT_NAME.into()),
        namespace: raw.namespace.unwrap_or_else(|| "istio-system".into()),
        token_ttl: c.span("agent.tokenTtl", raw.token_ttl.as_deref(), "1h"),
    };
    for (path, value) in [
        ("agent.serviceAccount", &agent.service_account),
        ("agent.namespace", &agent.namespace),
    ] {
        if !is_dns_label(value) {
            c.problem(path, format!("{value:?} must be a DNS label"));
        }
    }
    agent
}

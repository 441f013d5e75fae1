//! The gateway identity on MCP calls (issue 19): an agent reached through the A2A filter
//! carries the gateway credential it was given (`x-tollgate-a2a-credential`, verified in
//! `tollgate_core::identity` with `identity.gateway`), so rules can name the agent and the
//! principal it acts for:
//!
//! - `agents`: globs of the credential's agent;
//! - `on_behalf_of`: globs of the principal the agent acts for (a principal glob: the
//!   on-behalf-of user's groups are not known here, the credential carries only its name).
//!
//! Both are identity conditions: a caller without a gateway credential (or whose credential
//! names no on-behalf-of principal) never matches them. A refused credential is answered
//! here: 401 with the JSON-RPC error shape of the filter's other 401s.

use crate::message::codes;
use crate::replies::Reply;
use serde::Serialize;
use tollgate_core::gateway::Rejection;
use tollgate_core::host::Host;
use tollgate_core::identity::DelegationSelectors;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::reply::rpc_error_body;

/// Metric of presented gateway credentials, by `result`: `accepted` or why refused
/// (`malformed`, `bad_signature`, `expired`, `no_trace`, `other_trace`, `peer_mismatch`).
pub const METRIC: &str = "tollgate.mcp.gateway_credentials";

/// Rules and rate limits naming `agents` or `on_behalf_of`: non-empty lists, and
/// `identity.gateway` configured (core `DelegationSelectors::check_list`).
pub fn validate(config: &crate::config::Config) -> Result<(), tollgate_core::config::ConfigError> {
    let gateway = config.identity.gateway.is_some();
    let rules = config.policy.as_ref().map(|p| p.rules.as_slice()).unwrap_or_default();
    let rules = rules.iter().enumerate().map(|(i, r)| (format!("policy.rules[{i}]"), &r.agents, &r.on_behalf_of));
    let limits = config.rate_limits.iter().enumerate().map(|(i, l)| (format!("rate_limits[{i}]"), &l.agents, &l.on_behalf_of));
    for (at, agents, on_behalf_of) in rules.chain(limits) {
        DelegationSelectors::check_list(&at, "agents", agents.as_deref(), gateway)?;
        DelegationSelectors::check_list(&at, "on_behalf_of", on_behalf_of.as_deref(), gateway)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct RefusalData<'a> {
    reason: &'a str,
}

/// 401 for a refused gateway credential: `WWW-Authenticate: Bearer error="invalid_token"`
/// (with the resource metadata when configured) and a JSON-RPC error naming the reason.
pub fn refusal(why: Rejection, resource_metadata: Option<&str>) -> Reply {
    let mut reply = crate::replies::unauthorized(true, resource_metadata);
    reply.body = rpc_error_body(
        None,
        codes::UNAUTHORIZED,
        &format!("Unauthorized: {}", why.reason()),
        Some(RefusalData { reason: why.label() }),
    );
    reply
}

pub fn count(metrics: &Metrics, host: &dyn Host, result: &str) {
    metrics.inc(host, METRIC, &[("result", result)]);
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;

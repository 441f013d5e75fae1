//! The gateway identity on LLM calls (issue 19): an agent reached through the A2A filter
//! carries the gateway credential it was given (`identity.gateway`, verified in
//! `tollgate_core::identity`), and limits and budgets can select and count by it:
//!
//! - `agents`: globs of the credential's agent; `on_behalf_of`: globs of the principal it acts
//!   for. A limit with either applies only to requests whose gateway identity matches (a
//!   caller without a gateway credential never matches).
//! - `scope: agent` counts per agent (callers without one share `~none`).
//!
//! "Spend of agent X on behalf of team Y": `agents: [X]` with `scope: team` (the credential's
//! team is the on-behalf-of user's).

use tollgate_core::config::ConfigError;

/// The `agents` / `on_behalf_of` selectors of a limit (core, shared with MCP rules).
pub type Selectors = tollgate_core::identity::DelegationSelectors;

/// A limit's selectors and `scope: agent` need `identity.gateway`; lists must not be empty.
pub fn validate(at: &str, limit: &crate::config::LimitConfig, gateway: bool) -> Result<(), ConfigError> {
    Selectors::check_list(at, "agents", limit.agents.as_deref(), gateway)?;
    Selectors::check_list(at, "on_behalf_of", limit.on_behalf_of.as_deref(), gateway)?;
    if limit.scope == crate::limits::Scope::Agent && !gateway {
        return Err(ConfigError::field(&format!("{at}.scope"), "`agent` needs identity.gateway (the gateway credential names the agent)"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;

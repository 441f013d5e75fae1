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
use tollgate_core::glob::Glob;
use tollgate_core::identity::Identity;

/// The `agents` / `on_behalf_of` selectors of a limit.
#[derive(Debug, Default, Clone)]
pub struct Selectors {
    pub agents: Option<Vec<Glob>>,
    pub on_behalf_of: Option<Vec<Glob>>,
}

impl Selectors {
    pub fn new(agents: Option<&[String]>, on_behalf_of: Option<&[String]>) -> Self {
        let globs = |list: Option<&[String]>| list.map(|l| l.iter().map(|g| Glob::new(g)).collect());
        Selectors { agents: globs(agents), on_behalf_of: globs(on_behalf_of) }
    }

    /// Whether the limit applies to this caller.
    pub fn matches(&self, who: Option<&Identity>) -> bool {
        let holds = |globs: &Option<Vec<Glob>>, value: Option<&str>| match globs {
            None => true,
            Some(list) => value.is_some_and(|v| list.iter().any(|g| g.matches(v))),
        };
        holds(&self.agents, who.and_then(Identity::agent)) && holds(&self.on_behalf_of, who.and_then(Identity::on_behalf_of))
    }
}

/// A limit's selectors and `scope: agent` need `identity.gateway`; lists must not be empty.
pub fn validate(at: &str, limit: &crate::config::LimitConfig, gateway: bool) -> Result<(), ConfigError> {
    for (name, list) in [("agents", &limit.agents), ("on_behalf_of", &limit.on_behalf_of)] {
        let Some(list) = list else { continue };
        if list.is_empty() || list.iter().any(|g| g.trim().is_empty()) {
            return Err(ConfigError::field(&format!("{at}.{name}"), "must be a list of non-empty globs (omit it for any caller)"));
        }
        if !gateway {
            return Err(ConfigError::field(&format!("{at}.{name}"), "needs identity.gateway (the gateway credential names the agent)"));
        }
    }
    if limit.scope == crate::limits::Scope::Agent && !gateway {
        return Err(ConfigError::field(&format!("{at}.scope"), "`agent` needs identity.gateway (the gateway credential names the agent)"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;

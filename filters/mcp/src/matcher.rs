//! Who and where a decision is about, and the identity conditions rules and rate limits share
//! (principal, group and team globs). Its own module so that policy and rate limits both
//! depend on it, and neither on the other: config ← matcher ← {policy, ratelimit} ← exchange.

use tollgate_core::glob::Glob;
use tollgate_core::identity::Identity;

/// What is being decided.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub identity: Option<&'a Identity>,
    pub server: &'a str,
}

/// A list condition: absent matches anything, a list needs one matching element.
pub fn glob_any(globs: &Option<Vec<Glob>>, value: &str) -> bool {
    match globs {
        None => true,
        Some(list) => list.iter().any(|g| g.matches(value)),
    }
}

/// Identity conditions (principal, group, team globs), shared by rules and rate limits.
/// Without any, anyone matches (anonymous callers too); with any, anonymous callers never do.
#[derive(Debug)]
pub struct IdentityMatch {
    principals: Option<Vec<Glob>>,
    groups: Option<Vec<Glob>>,
    teams: Option<Vec<Glob>>,
    /// Agent and on-behalf-of globs (identity source `gateway`; see `delegation.rs`).
    delegated: tollgate_core::identity::DelegationSelectors,
}

impl IdentityMatch {
    pub fn new(principals: &Option<Vec<Glob>>, groups: &Option<Vec<Glob>>, teams: &Option<Vec<Glob>>) -> Self {
        IdentityMatch {
            principals: principals.clone(),
            groups: groups.clone(),
            teams: teams.clone(),
            delegated: Default::default(),
        }
    }

    /// Adds the `agents` / `on_behalf_of` conditions.
    pub fn delegated(mut self, agents: &Option<Vec<Glob>>, on_behalf_of: &Option<Vec<Glob>>) -> Self {
        self.delegated = tollgate_core::identity::DelegationSelectors { agents: agents.clone(), on_behalf_of: on_behalf_of.clone() };
        self
    }

    pub fn matches(&self, identity: Option<&Identity>) -> bool {
        if self.principals.is_none() && self.groups.is_none() && self.teams.is_none() && self.delegated.is_empty() {
            return true;
        }
        let Some(id) = identity else { return false };
        if !self.delegated.matches(Some(id)) {
            return false;
        }
        if !glob_any(&self.principals, &id.principal) {
            return false;
        }
        if let Some(groups) = &self.groups {
            if !id.groups.iter().any(|g| groups.iter().any(|p| p.matches(g))) {
                return false;
            }
        }
        if let Some(teams) = &self.teams {
            match &id.team {
                Some(team) if teams.iter().any(|p| p.matches(team)) => {}
                _ => return false,
            }
        }
        true
    }
}


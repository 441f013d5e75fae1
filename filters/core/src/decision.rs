//! The words every filter decides with, in one place:
//!
//! - [`Effect`]: what a rule says about the requests it matches, `allow` or `deny`;
//! - [`Verdict`]: what a rule set says about one request: an effect and the rule that decided
//!   (none: the rule set's default);
//! - [`Combining`]: how a rule set combines its matching rules into one verdict, named in
//!   configuration (`combining`) so an operator writing rules for two layers sees the
//!   difference: MCP is `deny_overrides`, A2A `first_match`.
//!
//! A request the filter answers itself is a *refusal*: each filter has one `Refusal` type
//! (`llm::api::Refusal`, `a2a::replies::Refusal`, `mcp::body::Refusal`) that its `replies`
//! render in its protocol's error shape. A counter that cannot take a request is *exceeded*
//! (`shared_data::window_counter::Exceeded`, `llm::limits::Exceeded`,
//! `mcp::ratelimit::Exceeded`).

use serde::Deserialize;

/// What a rule says about the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// What a rule set says about one request. `E` is the rule set's effect: [`Effect`], or a
/// filter's extension of it (A2A's `allow_originator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'r, E = Effect> {
    pub effect: E,
    /// The deciding rule; `None` when no rule decided (the default).
    pub rule_id: Option<&'r str>,
}

impl<'r> Verdict<'r> {
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// How matching rules combine into one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combining {
    /// Any matching deny wins; else the first matching allow; else the default (MCP).
    DenyOverrides,
    /// The first matching rule wins, whatever its effect; else the default (A2A).
    FirstMatch,
}

impl Combining {
    pub fn name(self) -> &'static str {
        match self {
            Combining::DenyOverrides => "deny_overrides",
            Combining::FirstMatch => "first_match",
        }
    }

    /// Accepts only `supported` (a filter that has one combining rule names it in config for
    /// clarity): the error message for any other value.
    pub fn require(configured: Option<Combining>, supported: Combining) -> Result<Combining, String> {
        match configured {
            None => Ok(supported),
            Some(c) if c == supported => Ok(c),
            Some(c) => Err(format!("`{}` is not supported here: rules combine by `{}`", c.name(), supported.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_is_named_and_only_the_supported_one_is_accepted() {
        let c: Combining = serde_json::from_str("\"deny_overrides\"").unwrap();
        assert_eq!(c, Combining::DenyOverrides);
        assert!(serde_json::from_str::<Combining>("\"deny_wins\"").is_err());
        assert_eq!(Combining::require(None, Combining::FirstMatch), Ok(Combining::FirstMatch));
        assert_eq!(Combining::require(Some(Combining::FirstMatch), Combining::FirstMatch), Ok(Combining::FirstMatch));
        assert!(Combining::require(Some(Combining::DenyOverrides), Combining::FirstMatch).unwrap_err().contains("first_match"));
    }
}

//! Authorization: caller × on-behalf-of × target agent × method. Rules combine by
//! `first_match` (core [`Combining`], `authz.combining`, its only value): the first matching
//! rule wins, whatever its effect; else the default.
//! Pure: no host access (the task originator is looked up by the caller of `evaluate`).
//! Rules are evaluated only in their compiled form ([`Policy`], built by
//! `Config::compile`): every rule carries its own method globs.

use serde::Deserialize;
pub use tollgate_core::decision::{Combining, Effect, Verdict};
use tollgate_core::glob::Glob;

/// Caller name for an unauthenticated request, matchable in rules.
pub const ANONYMOUS: &str = "anonymous";

/// A rule's effect: core's [`Effect`], or allowed only for the identity that created the
/// task (`allow_originator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuleEffect {
    #[default]
    Allow,
    Deny,
    /// Allowed only for the identity that created the task (on-behalf-of user, else caller).
    AllowOriginator,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// The configured id, else `rules[<index>]`.
    pub id: String,
    pub callers: Vec<Glob>,
    /// Empty: any (including none).
    pub on_behalf_of: Vec<Glob>,
    pub targets: Vec<Glob>,
    /// Globs over 1.0 method names (and `AgentCard`).
    pub methods: Vec<Glob>,
    pub effect: RuleEffect,
}

impl Rule {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        self.callers.iter().any(|g| g.matches(subject.caller))
            && (self.on_behalf_of.is_empty()
                || subject.on_behalf_of.is_some_and(|u| self.on_behalf_of.iter().any(|g| g.matches(u))))
            && self.targets.iter().any(|g| g.matches(subject.target))
            && self.methods.iter().any(|g| g.matches(subject.method))
    }
}

/// The compiled rules and the default effect. The default policy has no rules and allows.
#[derive(Debug, Default)]
pub struct Policy {
    default: RuleEffect,
    rules: Vec<Rule>,
}

impl Policy {
    pub fn new(default: RuleEffect, rules: Vec<Rule>) -> Self {
        Policy { default, rules }
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject<'a> {
    /// Agent identity, else principal, else `anonymous`.
    pub caller: &'a str,
    pub on_behalf_of: Option<&'a str>,
    pub target: &'a str,
    /// 1.0 method name, or `AgentCard`.
    pub method: &'a str,
}

/// The first matching rule's effect and id; the default's (rule `None`) when none matches.
pub fn evaluate<'p>(policy: &'p Policy, subject: &Subject<'_>) -> Verdict<'p, RuleEffect> {
    match policy.rules.iter().find(|rule| rule.matches(subject)) {
        Some(rule) => Verdict { effect: rule.effect, rule_id: Some(&rule.id) },
        None => Verdict { effect: policy.default, rule_id: None },
    }
}

/// Resolves `AllowOriginator`: the acting identity must be the task's recorded originator.
/// `anonymous` is not an identity (every unauthenticated caller has that name), so it owns
/// nothing: a task created anonymously is nobody's to read, list or cancel.
pub fn originator_allows(acting: &str, originator: Option<&str>) -> bool {
    acting != ANONYMOUS && originator.is_some_and(|o| o == acting)
}

/// What `AllowOriginator` means for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginatorCheck {
    /// The call names a task: the acting identity must be its originator.
    Task,
    /// `ListTasks` names none: allowed for an authenticated caller, and the answer is
    /// filtered to the tasks it originated.
    FilterList,
    /// Anonymous `ListTasks`: refused (an anonymous caller originates nothing it could list).
    Refuse,
}

/// How `AllowOriginator` applies to `method` (1.0 name) for the `acting` identity.
pub fn originator_check(method: &str, acting: &str) -> OriginatorCheck {
    match method {
        "ListTasks" if acting == ANONYMOUS => OriginatorCheck::Refuse,
        "ListTasks" => OriginatorCheck::FilterList,
        _ => OriginatorCheck::Task,
    }
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;

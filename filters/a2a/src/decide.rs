//! The A2A filter's decision on a classified call, pure: the exchange reads the facts from the
//! host ([`Facts`]: identity, the presented delegation context and whether its signature
//! verified, the JWT on-behalf-of claim, the task's table entry), [`decide`] rules on them
//! without touching the host, and the exchange applies the [`Decision`] (local reply, or the
//! upstream headers, the table write and the tags).
//!
//! In order: an unknown credential (401); who the caller is and whom it acts for (a trusted
//! agent by identity, else a valid signature, else the presented context is discarded); for a
//! card fetch only the rules (method `AgentCard`); for a call the delegation chain (loop,
//! depth; continuing a task the target owns is not a loop), then the rules, then under
//! `allow_originator` the originator check (another caller's task, an unknown task, or an
//! anonymous `ListTasks`).

use crate::authz::{self, RuleEffect, OriginatorCheck, Subject, ANONYMOUS};
use crate::chain::{self, Inbound, Presented, Trust};
use crate::config::{Delegation, State};
use crate::conversations::TaskEntry;
use crate::replies::Refusal;
use tollgate_core::identity::Identity;

/// What the decision is made on, read by the exchange.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// A card fetch (no chain, rules by `AgentCard`), not a call.
    pub card: bool,
    pub target: &'a str,
    pub identity: Option<&'a Identity>,
    /// The request presented an API key nobody has.
    pub unknown_credential: bool,
    /// The gateway-owned context as the caller sent it.
    pub presented: &'a Presented,
    /// `presented` carries the gateway's valid, unexpired signature.
    pub signature_ok: bool,
    /// The end user named by the configured JWT claim.
    pub jwt_on_behalf_of: Option<&'a str>,
    /// The method as rules name it: the 1.0 name, else the JSON-RPC method as sent.
    pub method: &'a str,
    /// The call names a task (`taskId`, or `id` of a task method).
    pub names_task: bool,
}

/// What to do with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward it; `list_owner`: a `ListTasks` answer to cut down to this identity's tasks.
    Forward { list_owner: Option<String> },
    Refuse(Refusal),
}

/// The ruling, with what it found out about the caller and the chain (recorded either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub caller: String,
    pub trust: Trust,
    pub on_behalf_of: Option<String>,
    /// This call's hop and chain (`None`/empty for card fetches and unauthenticated calls).
    pub hop: Option<u32>,
    pub chain: Vec<String>,
    /// The rule that decided (`None`: the default, or no rule was consulted).
    pub rule_id: Option<String>,
    pub action: Action,
}

impl Decision {
    fn refused(why: Refusal) -> Self {
        Decision {
            caller: ANONYMOUS.to_string(),
            trust: Trust::None,
            on_behalf_of: None,
            hop: None,
            chain: Vec::new(),
            rule_id: None,
            action: Action::Refuse(why),
        }
    }
}

/// The caller's agent identity when its principal is a trusted agent.
pub fn trusted_agent(delegation: &Delegation, identity: Option<&Identity>) -> Option<String> {
    let principal = &identity?.principal;
    delegation
        .trusted_agents
        .iter()
        .find(|a| &a.principal == principal)
        .map(|a| a.agent.clone().unwrap_or_else(|| a.principal.clone()))
}

/// Decides a classified call. `task`: the table's entry for the task the call names at the
/// target (`None`: none named, or no record).
pub fn decide(facts: &Facts<'_>, task: Option<&TaskEntry>, state: &State) -> Decision {
    if facts.unknown_credential {
        return Decision::refused(Refusal::Unauthenticated);
    }
    // Delegation context: believed only from trusted agents or with a valid signature.
    let inbound = if facts.card {
        Inbound::untrusted()
    } else {
        let agent = trusted_agent(&state.delegation, facts.identity);
        let signature_ok = agent.is_none() && facts.signature_ok;
        chain::accept(facts.presented, agent.as_deref(), signature_ok)
    };
    let principal = facts.identity.map(|i| i.principal.clone());
    let caller = inbound.caller_agent.clone().or_else(|| principal.clone()).unwrap_or_else(|| ANONYMOUS.to_string());
    let on_behalf_of = inbound
        .on_behalf_of
        .clone()
        .or_else(|| facts.jwt_on_behalf_of.map(str::to_string))
        .or_else(|| if inbound.caller_agent.is_none() { principal } else { None });
    let mut decision = Decision { caller, trust: inbound.trust, on_behalf_of, hop: None, chain: Vec::new(), rule_id: None, action: Action::Forward { list_owner: None } };

    if facts.card {
        let verdict = authz::evaluate(&state.authz, &subject(&decision, facts.target, "AgentCard"));
        let action = if verdict.effect == RuleEffect::Deny { Action::Refuse(Refusal::Forbidden) } else { Action::Forward { list_owner: None } };
        decision.rule_id = verdict.rule_id.map(str::to_string);
        decision.action = action;
        return decision;
    }

    // A call continuing a task the target owns is not a loop.
    let continues = task.is_some_and(|t| t.owned_by_target);
    match chain::decide(&inbound, facts.target, state.delegation.max_hops, continues) {
        Ok(out) => {
            decision.hop = Some(out.hop);
            decision.chain = out.chain;
        }
        Err(violation) => {
            decision.hop = Some(inbound.hop.saturating_add(1));
            decision.chain = inbound.chain;
            decision.chain.push(facts.target.to_string());
            decision.action = Action::Refuse(Refusal::Delegation(violation));
            return decision;
        }
    }
    let verdict = authz::evaluate(&state.authz, &subject(&decision, facts.target, facts.method));
    let rule_id = verdict.rule_id.map(str::to_string);
    let action = match verdict.effect {
        RuleEffect::Allow => Action::Forward { list_owner: None },
        RuleEffect::Deny => Action::Refuse(Refusal::Forbidden),
        RuleEffect::AllowOriginator => {
            let acting = decision.on_behalf_of.as_deref().unwrap_or(&decision.caller);
            originator(facts.method, acting, facts.names_task, task)
        }
    };
    decision.rule_id = rule_id;
    decision.action = action;
    decision
}

fn subject<'a>(decision: &'a Decision, target: &'a str, method: &'a str) -> Subject<'a> {
    Subject { caller: &decision.caller, on_behalf_of: decision.on_behalf_of.as_deref(), target, method }
}

/// `allow_originator` for the `acting` identity (on-behalf-of user, else caller).
fn originator(method: &str, acting: &str, names_task: bool, task: Option<&TaskEntry>) -> Action {
    match authz::originator_check(method, acting) {
        // A task the gateway has no record of (created by calling the agent directly or
        // through another Envoy, or its entry expired) is nobody's here: answered as an
        // unknown task, never forwarded.
        OriginatorCheck::Task if task.is_none() && names_task => Action::Refuse(Refusal::TaskNotFound),
        OriginatorCheck::Task if !authz::originator_allows(acting, task.and_then(|t| t.originator.as_deref())) => {
            Action::Refuse(Refusal::NotOriginator)
        }
        OriginatorCheck::Task => Action::Forward { list_owner: None },
        OriginatorCheck::Refuse => Action::Refuse(Refusal::NotOriginator),
        OriginatorCheck::FilterList => Action::Forward { list_owner: Some(acting.to_string()) },
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

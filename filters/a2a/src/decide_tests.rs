//! The decision on plain values: a compiled configuration, facts and a task entry in, a
//! decision out. No host.

use super::*;
use crate::chain::Violation;
use crate::config::Config;
use serde_json::{json, Value};
use tollgate_core::identity::Source;

fn state(config: Value) -> State {
    tollgate_core::config::load::<Config>(config.to_string().as_bytes()).unwrap().compile().unwrap()
}

fn principal(name: &str) -> Identity {
    Identity { principal: name.into(), team: None, groups: vec![], source: Source::ApiKey, key_name: None, allowed_models: None, delegation: None }
}

const NOTHING: Presented = Presented { hop: None, chain: None, on_behalf_of: None, sig: None };

/// A call to `agent-b` with `method` from nobody in particular.
fn call<'a>(method: &'a str) -> Facts<'a> {
    Facts {
        card: false,
        target: "agent-b",
        identity: None,
        unknown_credential: false,
        presented: &NOTHING,
        signature_ok: false,
        jwt_on_behalf_of: None,
        method,
        names_task: false,
    }
}

fn context(hop: u32, chain: &str, on_behalf_of: Option<&str>) -> Presented {
    Presented { hop: Some(hop.to_string()), chain: Some(chain.into()), on_behalf_of: on_behalf_of.map(String::from), sig: Some("v1.x.y".into()) }
}

fn task(owned_by_target: bool, originator: &str) -> TaskEntry {
    TaskEntry { owned_by_target, originator: Some(originator.into()), context: None }
}

#[test]
fn an_unknown_credential_is_refused_before_anything_else() {
    let s = state(json!({"authz": {"default": "deny"}}));
    let d = decide(&Facts { unknown_credential: true, ..call("SendMessage") }, None, &s);
    assert_eq!(d, Decision::refused(Refusal::Unauthenticated));
    assert_eq!((d.caller.as_str(), d.hop, d.rule_id), (ANONYMOUS, None, None));
}

#[test]
fn a_new_chain_starts_at_hop_one_and_the_caller_acts_for_itself() {
    let s = state(json!({}));
    let d = decide(&call("SendMessage"), None, &s);
    assert_eq!(d.action, Action::Forward { list_owner: None });
    assert_eq!((d.caller.as_str(), d.trust, d.on_behalf_of), (ANONYMOUS, Trust::None, None));
    assert_eq!((d.hop, d.chain), (Some(1), vec!["agent-b".to_string()]));
    let alice = principal("alice");
    let d = decide(&Facts { identity: Some(&alice), ..call("SendMessage") }, None, &s);
    assert_eq!((d.caller.as_str(), d.on_behalf_of.as_deref()), ("alice", Some("alice")));
}

#[test]
fn a_presented_context_counts_only_from_a_trusted_agent_or_with_a_valid_signature() {
    let s = state(json!({"delegation": {"trusted_agents": [{"principal": "svc-a", "agent": "agent-a"}]}}));
    let presented = context(1, "agent-a", Some("alice"));
    let untrusted = Facts { presented: &presented, ..call("SendMessage") };
    let d = decide(&untrusted, None, &s);
    assert_eq!((d.trust, d.hop, d.on_behalf_of), (Trust::None, Some(1), None), "discarded: a new chain");
    let d = decide(&Facts { signature_ok: true, ..untrusted }, None, &s);
    assert_eq!((d.trust, d.caller.as_str(), d.hop), (Trust::Signature, "agent-a", Some(2)));
    assert_eq!((d.chain, d.on_behalf_of.as_deref()), (vec!["agent-a".to_string(), "agent-b".to_string()], Some("alice")));
    let svc = principal("svc-a");
    let d = decide(&Facts { identity: Some(&svc), ..untrusted }, None, &s);
    assert_eq!((d.trust, d.caller.as_str(), d.hop, d.on_behalf_of.as_deref()), (Trust::Identity, "agent-a", Some(2), Some("alice")));
    // A trusted agent's own call acts for nobody unless a JWT claim names someone.
    let d = decide(&Facts { identity: Some(&svc), ..call("SendMessage") }, None, &s);
    assert_eq!((d.caller.as_str(), d.on_behalf_of), ("agent-a", None));
    let d = decide(&Facts { identity: Some(&svc), jwt_on_behalf_of: Some("bob"), ..call("SendMessage") }, None, &s);
    assert_eq!(d.on_behalf_of.as_deref(), Some("bob"));
}

#[test]
fn loops_and_depth_are_refused_with_the_chain_they_would_have_had() {
    let s = state(json!({"delegation": {"max_hops": 3}}));
    let looped = context(2, "agent-b,agent-a", None);
    let facts = Facts { presented: &looped, signature_ok: true, names_task: true, ..call("SendMessage") };
    let d = decide(&facts, None, &s);
    assert_eq!(d.action, Action::Refuse(Refusal::Delegation(Violation::Loop)));
    assert_eq!((d.hop, d.chain.join(",")), (Some(3), "agent-b,agent-a,agent-b".to_string()));
    // Continuing a task the target owns is not a loop; a task another agent owns is.
    assert_eq!(decide(&facts, Some(&task(true, "x")), &s).action, Action::Forward { list_owner: None });
    assert_eq!(decide(&facts, Some(&task(false, "x")), &s).action, Action::Refuse(Refusal::Delegation(Violation::Loop)));
    let deep = context(3, "agent-a", None);
    let d = decide(&Facts { presented: &deep, signature_ok: true, ..call("SendMessage") }, None, &s);
    assert_eq!((d.action, d.hop), (Action::Refuse(Refusal::Delegation(Violation::MaxDepth)), Some(4)));
}

#[test]
fn rules_decide_by_caller_and_method_and_name_the_rule() {
    let s = state(json!({"authz": {"default": "deny", "rules": [
        {"id": "alice-sends", "callers": ["alice"], "methods": ["message/send"], "effect": "allow"}]}}));
    let alice = principal("alice");
    let d = decide(&Facts { identity: Some(&alice), ..call("SendMessage") }, None, &s);
    assert_eq!((d.action, d.rule_id.as_deref()), (Action::Forward { list_owner: None }, Some("alice-sends")));
    let d = decide(&Facts { identity: Some(&alice), ..call("CancelTask") }, None, &s);
    assert_eq!((d.action, d.rule_id), (Action::Refuse(Refusal::Forbidden), None));
    // An extension's method is judged by its name as sent.
    let d = decide(&Facts { identity: Some(&alice), ..call("x/custom") }, None, &s);
    assert_eq!(d.action, Action::Refuse(Refusal::Forbidden));
}

#[test]
fn under_allow_originator_only_the_originator_reaches_a_task() {
    let s = state(json!({"authz": {"rules": [{"id": "own", "methods": ["GetTask", "ListTasks"], "effect": "allow_originator"}]}}));
    let alice = principal("alice");
    let get = Facts { identity: Some(&alice), names_task: true, ..call("GetTask") };
    assert_eq!(decide(&get, Some(&task(true, "alice")), &s).action, Action::Forward { list_owner: None });
    assert_eq!(decide(&get, Some(&task(true, "bob")), &s).action, Action::Refuse(Refusal::NotOriginator));
    assert_eq!(decide(&get, None, &s).action, Action::Refuse(Refusal::TaskNotFound), "no record: not found");
    let unnamed = Facts { names_task: false, ..get };
    assert_eq!(decide(&unnamed, None, &s).action, Action::Refuse(Refusal::NotOriginator), "no task named");
    let anonymous = Facts { identity: None, ..get };
    assert_eq!(decide(&anonymous, Some(&task(true, ANONYMOUS)), &s).action, Action::Refuse(Refusal::NotOriginator));
    // ListTasks: filtered to the acting identity's tasks; refused to the anonymous.
    let list = Facts { identity: Some(&alice), ..call("ListTasks") };
    assert_eq!(decide(&list, None, &s).action, Action::Forward { list_owner: Some("alice".into()) });
    assert_eq!(decide(&Facts { identity: None, ..list }, None, &s).action, Action::Refuse(Refusal::NotOriginator));
    assert_eq!(decide(&list, None, &s).rule_id.as_deref(), Some("own"));
}

#[test]
fn a_card_fetch_is_judged_by_rules_only() {
    let s = state(json!({"authz": {"rules": [{"id": "no-cards", "callers": ["mallory"], "methods": ["AgentCard"], "effect": "deny"}]},
                         "delegation": {"max_hops": 1}}));
    let deep = context(5, "agent-b", Some("alice"));
    let card = Facts { card: true, presented: &deep, signature_ok: true, ..call("AgentCard") };
    let d = decide(&card, None, &s);
    assert_eq!((d.action, d.trust, d.hop, d.chain.len()), (Action::Forward { list_owner: None }, Trust::None, None, 0), "never refused for chain reasons");
    let mallory = principal("mallory");
    let d = decide(&Facts { identity: Some(&mallory), ..card }, None, &s);
    assert_eq!((d.action, d.rule_id.as_deref()), (Action::Refuse(Refusal::Forbidden), Some("no-cards")));
}

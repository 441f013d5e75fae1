//! The audit record and metric labels from plain facts.

use super::*;
use crate::chain::Violation;
use serde_json::{json, Value};

fn facts() -> ExchangeFacts {
    ExchangeFacts {
        start_nanos: 1_000_000_000,
        binding: Some(Binding::JsonRpc),
        dialect: Dialect::V10,
        method: Some(Method::SendMessage),
        raw_method: Some("SendMessage".into()),
        target: "agent-b".into(),
        caller: "alice".into(),
        hop: Some(1),
        chain: vec!["agent-b".into()],
        ..ExchangeFacts::default()
    }
}

fn to_json(facts: &ExchangeFacts, response: ResponseFacts<'_>, now: u64) -> Value {
    serde_json::to_value(build(facts, response, now)).unwrap()
}

#[test]
fn a_forwarded_call_is_allowed_with_what_the_response_revealed() {
    let f = ExchangeFacts { ttfe_nanos: Some(1_004_000_000), rule_id: Some("r".into()), ..facts() };
    let mut tracker = ResponseTracker::json(false);
    tracker.feed(br#"{"jsonrpc":"2.0","id":1,"result":{"kind":"task","id":"t-1","contextId":"c-1","status":{"state":"TASK_STATE_COMPLETED"}}}"#);
    tracker.finish();
    let v = to_json(&f, ResponseFacts { tracker: Some(&tracker), ..ResponseFacts::default() }, 1_010_000_000);
    assert_eq!((v["decision"].as_str(), v["rule_id"].as_str(), v["duration_ms"].as_u64(), v["ttfe_ms"].as_u64()), (Some("allow"), Some("r"), Some(10), Some(4)));
    assert_eq!((v["task_id"].as_str(), v["context_id"].as_str(), v["task_state"].as_str()), (Some("t-1"), Some("c-1"), Some("completed")));
    assert_eq!((v["method"].as_str(), v["binding"].as_str(), v["chain"].clone()), (Some("SendMessage"), Some("jsonrpc"), json!(["agent-b"])));
    assert_eq!(state_label(&f, Some(&tracker)), "completed");
    assert_eq!(state_label(&f, None), "none");
}

#[test]
fn refusals_are_denials_or_errors_with_their_reason() {
    let loop_ = ExchangeFacts { refusal: Some(Refusal::Delegation(Violation::Loop)), status: Some(200), ..facts() };
    let v = to_json(&loop_, ResponseFacts::default(), 1_000_000_000);
    assert_eq!((v["decision"].as_str(), v["reason"].as_str(), v["rpc_error_code"].as_i64()), (Some("deny"), Some("A2A_DELEGATION_LOOP"), Some(-32050)));
    assert_eq!(state_label(&loop_, None), "denied");
    let rest = ExchangeFacts { refusal: Some(Refusal::TooLarge), binding: Some(Binding::Rest), ..facts() };
    let v = to_json(&rest, ResponseFacts::default(), 1_000_000_000);
    assert_eq!((v["decision"].as_str(), v["rpc_error_code"].is_null(), v["error"].as_str()), (Some("error"), true, Some("request body too large")));
    // A refused card records no card outcome.
    let card = ResponseFacts { card: Some(CardAudit { result: "rewritten", urls_rewritten: 1, public_base: None }), ..ResponseFacts::default() };
    assert!(to_json(&rest, card, 0)["card"].is_null());
}

#[test]
fn method_names_and_labels() {
    let unknown = ExchangeFacts { method: None, raw_method: Some("x/custom".into()), ..facts() };
    assert_eq!((unknown.method_name(), unknown.method_label()), ("x/custom", "unknown"), "labels stay bounded");
    let card = ExchangeFacts { binding: Some(Binding::Card), method: None, ..facts() };
    assert_eq!((card.method_name(), card.method_label()), ("AgentCard", "AgentCard"));
    let obo = ExchangeFacts { on_behalf_of: Some("bob".into()), ..facts() };
    assert_eq!((facts().acting(), obo.acting()), ("alice", "bob"));
}

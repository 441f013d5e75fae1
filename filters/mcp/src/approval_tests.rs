//! Unit tests of the approval decisions, with plain values: the gate, the answer, the fact,
//! the request body, the refusals, the configuration.

use super::*;
use serde_json::{json, Value};
use std::borrow::Cow;
use tollgate_core::config::load;
use tollgate_core::identity::Source;

fn needs(list: &[(usize, &str)]) -> Vec<(usize, String)> {
    list.iter().map(|(i, r)| (*i, r.to_string())).collect()
}

#[test]
fn the_gate_asks_about_a_single_request_refuses_batches_and_only_records_in_dry_run() {
    assert_eq!(gate(needs(&[]), false, false), Gate::Pass);
    assert_eq!(gate(needs(&[]), true, true), Gate::Pass);
    assert_eq!(gate(needs(&[(0, "big")]), false, false), Gate::Ask { at: 0, rule_id: "big".into() });
    assert_eq!(gate(needs(&[(2, "big"), (3, "x")]), true, false), Gate::RefuseBatch { at: 2, rule_id: "big".into() });
    assert_eq!(gate(needs(&[(1, "big")]), true, false), Gate::RefuseBatch { at: 1, rule_id: "big".into() });
    assert_eq!(gate(needs(&[(0, "big")]), false, true), Gate::Record(needs(&[(0, "big")])));
    assert_eq!(gate(needs(&[(0, "a"), (1, "b")]), true, true), Gate::Record(needs(&[(0, "a"), (1, "b")])));
}

fn answer(status: u16, body: &str) -> Answer {
    read_answer(Ok((status, body.as_bytes())))
}

#[test]
fn only_an_explicit_true_on_200_approves() {
    assert_eq!(answer(200, r#"{"approved": true}"#), Answer::Approved { approver: None, reason: None });
    assert_eq!(
        answer(200, r#"{"approved": true, "approver": "carol", "reason": "looks fine", "extra": [1]}"#),
        Answer::Approved { approver: Some("carol".into()), reason: Some("looks fine".into()) }
    );
    assert_eq!(
        answer(200, r#"{"approved": false, "approver": "carol", "reason": "too big"}"#),
        Answer::Denied { approver: Some("carol".into()), reason: Some("too big".into()) }
    );
    assert_eq!(answer(200, r#"{"approved": false, "approver": null}"#), Answer::Denied { approver: None, reason: None });
    for body in [
        r#"{"approved": "true"}"#,
        r#"{"approved": 1}"#,
        r#"{"approved": null}"#,
        r#"{}"#,
        r#"{"approved": [true]}"#,
        r#"{"approved": {"value": true}}"#,
        r#"[{"approved": true}]"#,
        r#"true"#,
        r#"{"approved": true"#,
        r#"{"approved": true} trailing"#,
        "",
        r#"{"approved": false, "approved": true}"#,
        r#"{"approved": true, "approver": 7}"#,
        r#"{"approved": true, "reason": {"text": "x"}}"#,
    ] {
        assert!(matches!(answer(200, body), Answer::Failed { status: Some(200), .. }), "{body}");
    }
    for status in [201, 202, 204, 302, 400, 403, 500, 503, 504] {
        assert_eq!(answer(status, r#"{"approved": true}"#), Answer::Failed { status: Some(status), why: format!("HTTP status {status}") });
    }
    assert!(matches!(read_answer(Err(())), Answer::Failed { status: None, .. }));
}

#[test]
fn long_texts_from_the_approver_are_cut() {
    let long = "x".repeat(1000);
    let Answer::Denied { approver, .. } = answer(200, &json!({"approved": false, "approver": long}).to_string()) else { panic!() };
    assert_eq!(approver.map(|a| a.len()), Some(256));
}

#[test]
fn facts_name_the_outcome_and_timeouts_are_told_apart() {
    let yes = ApprovalFact::answered("big", &Answer::Approved { approver: Some("carol".into()), reason: None }, 12, 1000);
    assert_eq!((yes.approved, yes.status, yes.timeout, yes.outcome(), yes.metric_outcome()), (Some(true), Some(200), false, "approved", "approved"));
    assert_eq!(yes.label(Decision::Allow, true), "approved");
    let no = ApprovalFact::answered("big", &Answer::Denied { approver: None, reason: Some("no".into()) }, 12, 1000);
    assert_eq!((no.approved, no.outcome(), no.metric_outcome()), (Some(false), "not approved", "denied"));
    assert_eq!(no.label(Decision::Deny, true), "not_approved");
    let late = ApprovalFact::answered("big", &Answer::Failed { status: None, why: "no answer".into() }, 1003, 1000);
    assert_eq!((late.timeout, late.outcome(), late.metric_outcome()), (true, "approval timed out", "timeout"));
    let envoy_504 = ApprovalFact::answered("big", &Answer::Failed { status: Some(504), why: "HTTP status 504".into() }, 1000, 1000);
    assert!(envoy_504.timeout);
    let early_504 = ApprovalFact::answered("big", &Answer::Failed { status: Some(504), why: "HTTP status 504".into() }, 1499, 1500);
    assert!(early_504.timeout, "Envoy's timer by the filter's clock");
    let not_yet = ApprovalFact::answered("big", &Answer::Failed { status: Some(504), why: "HTTP status 504".into() }, 1400, 1500);
    assert!(!not_yet.timeout);
    let quick_504 = ApprovalFact::answered("big", &Answer::Failed { status: Some(504), why: "HTTP status 504".into() }, 3, 1000);
    assert_eq!((quick_504.timeout, quick_504.outcome(), quick_504.metric_outcome()), (false, "approval service failed", "error"));
    let reset = ApprovalFact::answered("big", &Answer::Failed { status: None, why: "reset".into() }, 3, 1000);
    assert!(!reset.timeout);
    let dry = ApprovalFact::new("big", false);
    assert_eq!((dry.outcome(), dry.label(Decision::Allow, false)), ("approval required", "dryrun_approval"));
    assert_eq!(dry.label(Decision::Deny, true), "not_approved");
    let v = serde_json::to_value(&late).unwrap();
    assert_eq!(v, json!({"rule_id": "big", "asked": true, "approved": false, "timeout": true, "error": "no answer", "latency_ms": 1003}));
    let v = serde_json::to_value(&yes).unwrap();
    assert_eq!(v, json!({"rule_id": "big", "asked": true, "approved": true, "approver": "carol", "status": 200, "latency_ms": 12}));
}

#[test]
fn the_request_body_holds_who_what_and_the_digest_and_the_arguments_only_when_given() {
    let alice = Identity {
        principal: "alice".into(),
        team: Some("payments".into()),
        groups: vec!["finance".into()],
        source: Source::ApiKey,
        key_name: Some("alice-key".into()),
        allowed_models: None,
        delegation: None,
    };
    let target = Target::Tool(Cow::Borrowed("transfer"));
    let args = RawValue::from_string(r#"{"amount":5000,"to":"x"}"#.into()).unwrap();
    let ask = |arguments: Option<&'static RawValue>| {
        let a = Ask {
            version: 1,
            request_id: Some("rid-1"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            identity: Some(&alice),
            server: "demo",
            session_id: None,
            method: "tools/call",
            tool: None,
            prompt: None,
            resource_uri: None,
            rule_id: "big-transfers",
            arguments_sha256: Some("abc"),
            arguments,
        }
        .with_target(&target);
        serde_json::from_slice::<Value>(&request_body(&a)).unwrap()
    };
    assert_eq!(
        ask(None),
        json!({"version": 1, "request_id": "rid-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
               "identity": {"principal": "alice", "team": "payments", "groups": ["finance"], "source": "api_key", "key_name": "alice-key"},
               "server": "demo", "method": "tools/call", "tool": "transfer", "rule_id": "big-transfers", "arguments_sha256": "abc"})
    );
    let leaked: &'static RawValue = Box::leak(args);
    assert_eq!(ask(Some(leaked))["arguments"], json!({"amount": 5000, "to": "x"}));
}

#[test]
fn refusals_say_not_approved_explain_names_the_rule_and_the_approver_hide_does_not() {
    let id = RawValue::from_string("7".into()).unwrap();
    let target = Target::Tool(Cow::Borrowed("transfer"));
    let fact = ApprovalFact::answered("big", &Answer::Denied { approver: Some("carol".into()), reason: Some("too big".into()) }, 5, 1000);
    let r = not_approved(DenyStyle::Explain, Some(&id), "tools/call", &target, &fact);
    assert_eq!((r.status, r.headers.len()), (403, 0));
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -31403, "message": "Not approved: tools/call transfer",
               "data": {"rule_id": "big", "reason": "not approved", "approver": "carol", "approver_reason": "too big"}}})
    );
    let r = not_approved(DenyStyle::Hide, Some(&id), "tools/call", &target, &fact);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -31403, "message": "Not approved: tools/call transfer", "data": {"reason": "not approved"}}})
    );
    let late = ApprovalFact::answered("big", &Answer::Failed { status: None, why: "x".into() }, 2000, 1000);
    let r = not_approved(DenyStyle::Explain, Some(&id), "tools/call", &target, &late);
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["error"]["data"], json!({"rule_id": "big", "reason": "approval timed out"}));
}

#[test]
fn a_batch_is_refused_whole_and_the_risky_call_is_told_to_come_alone() {
    let (a, b) = (RawValue::from_string("1".into()).unwrap(), RawValue::from_string("2".into()).unwrap());
    let (add, transfer) = (Target::Tool(Cow::Borrowed("add")), Target::Tool(Cow::Borrowed("transfer")));
    let messages = [
        DeniedRequest { id: Some(&a), method: "tools/call", target: &add, denied: None, shown: false },
        DeniedRequest { id: Some(&b), method: "tools/call", target: &transfer, denied: Some(Some("big")), shown: false },
    ];
    let r = batch_refused(DenyStyle::Explain, &messages);
    assert_eq!(r.status, 403);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v[0]["error"]["data"], json!({"reason": BATCH}));
    assert_eq!(v[1]["id"], 2);
    assert_eq!(v[1]["error"]["message"], "Approval required: tools/call transfer must be sent on its own, not in a batch");
    assert_eq!(v[1]["error"]["data"], json!({"rule_id": "big", "reason": IN_BATCH}));
    let v: Value = serde_json::from_slice(&batch_refused(DenyStyle::Hide, &messages).body).unwrap();
    assert_eq!(v[1]["error"]["data"], json!({"reason": IN_BATCH}));
}

fn config_err(text: Value) -> String {
    load::<Config>(text.to_string().as_bytes()).unwrap_err().0
}

#[test]
fn approval_config_is_checked_at_load_naming_the_field() {
    let approve = json!({"rules": [{"id": "ok", "effect": "allow"}, {"id": "big", "effect": "approve", "tools": ["transfer"]}]});
    let err = config_err(json!({"policy": approve}));
    assert!(err.starts_with("policy.rules[1].effect: `approve` needs `approval`"), "{err}");
    assert!(err.contains("rule `big`"), "{err}");
    let c: Config = load(json!({"policy": approve, "approval": {"cluster": "approvals"}}).to_string().as_bytes()).unwrap();
    let a = c.approval.unwrap();
    assert_eq!((a.path.as_str(), a.timeout_ms, a.include_arguments, a.authority), ("/approve", 10_000, false, None));
    for (approval, field) in [
        (json!({"cluster": ""}), "approval.cluster"),
        (json!({"cluster": "a", "path": "approve"}), "approval.path"),
        (json!({"cluster": "a", "path": "/a b"}), "approval.path"),
        (json!({"cluster": "a", "timeout_ms": 0}), "approval.timeout_ms"),
        (json!({"cluster": "a", "timeout_ms": 300001}), "approval.timeout_ms"),
        (json!({"cluster": "a", "authority": ""}), "approval.authority"),
        (json!({"cluster": "a", "authority": "a\nb"}), "approval.authority"),
        (json!({"cluster": "a", "include_args": true}), "approval"),
        (json!({"path": "/x"}), "approval"),
        (json!({"cluster": "a", "include_arguments": "yes"}), "approval.include_arguments"),
    ] {
        let err = config_err(json!({"approval": approval}));
        assert!(err.starts_with(field), "{approval}: {err}");
    }
    let err = config_err(json!({"policy": {"rules": [{"id": "x", "effect": "ask"}]}}));
    assert!(err.starts_with("policy.rules[0].effect"), "{err}");
}

// --- the policy's side: `approve` rules ---------------------------------------------------

mod policy {
    use crate::args::Json;
    use crate::config::PolicyConfig;
    use crate::message::Target;
    use crate::policy::{Policy, Subject};
    use serde_json::{json, Value};
    use std::borrow::Cow;
    use tollgate_core::identity::{Identity, Source};

    fn policy(rules: Value) -> Policy {
        let cfg: PolicyConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
        Policy::compile(&cfg, "policy").unwrap()
    }

    fn who(principal: &str, groups: &[&str]) -> Identity {
        Identity {
            principal: principal.into(),
            team: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            source: Source::ApiKey,
            key_name: None,
            allowed_models: None,
            delegation: None,
        }
    }

    fn tool(name: &str) -> Target<'_> {
        Target::Tool(Cow::Borrowed(name))
    }

    /// (allowed, deciding rule, approve rule asked for) of a call.
    fn judge<'p>(p: &'p Policy, s: Subject<'_>, name: &str, args: Value) -> (bool, Option<&'p str>, Option<&'p str>) {
        let args = Json::from_value(&args);
        let v = p.decide(s, "tools/call", &tool(name), &args);
        let asked = if v.allowed() { p.approval(s, "tools/call", &tool(name), &args) } else { None };
        (v.allowed(), v.rule_id, asked)
    }

    fn rules() -> Policy {
        policy(json!([
            {"id": "finance-transfers", "effect": "allow", "groups": ["finance"], "tools": ["transfer"]},
            {"id": "big-transfers", "effect": "approve", "principals": ["*"], "tools": ["transfer"],
             "arguments": [{"path": "$.amount", "gt": 1000}]},
            {"id": "resets", "effect": "approve", "groups": ["eng"], "tools": ["admin_reset"]},
            {"id": "no-interns", "effect": "deny", "groups": ["interns"]},
            {"id": "add", "effect": "allow", "tools": ["add"]},
        ]))
    }

    #[test]
    fn an_approve_rule_needs_approval_even_where_an_allow_rule_also_matches() {
        let p = rules();
        let bob = who("bob", &["finance"]);
        let s = Subject { identity: Some(&bob), server: "demo" };
        assert_eq!(judge(&p, s, "transfer", json!({"amount": 5})), (true, Some("finance-transfers"), None));
        assert_eq!(judge(&p, s, "transfer", json!({"amount": 5000})), (true, Some("finance-transfers"), Some("big-transfers")));
        // Read fail closed when asking: a value the range cannot read is asked about.
        assert_eq!(judge(&p, s, "transfer", json!({"amount": "lots"})), (true, Some("finance-transfers"), Some("big-transfers")));
        assert_eq!(judge(&p, s, "transfer", json!({"amount": [5, 5000]})), (true, Some("finance-transfers"), Some("big-transfers")));
        assert_eq!(judge(&p, s, "add", json!({})), (true, Some("add"), None));
    }

    #[test]
    fn an_approve_rule_alone_allows_subject_to_approval_and_only_what_it_covers() {
        let p = rules();
        let alice = who("alice", &["eng"]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        // No allow rule for alice's transfers: the approve rule grants the big ones (asked) ...
        assert_eq!(judge(&p, s, "transfer", json!({"amount": 5000})), (true, Some("big-transfers"), Some("big-transfers")));
        // ... and nothing else: read strictly where it is the rule that allows.
        assert!(!judge(&p, s, "transfer", json!({"amount": 5})).0);
        assert!(!judge(&p, s, "transfer", json!({"amount": "lots"})).0);
        assert_eq!(judge(&p, s, "admin_reset", json!({})), (true, Some("resets"), Some("resets")));
        // Anonymous callers match no identity condition.
        let anon = Subject { identity: None, server: "demo" };
        assert!(!judge(&p, anon, "admin_reset", json!({})).0);
    }

    #[test]
    fn a_matching_deny_still_wins_over_approve() {
        let p = rules();
        let intern = who("ivy", &["eng", "interns"]);
        let s = Subject { identity: Some(&intern), server: "demo" };
        assert_eq!(judge(&p, s, "admin_reset", json!({})), (false, Some("no-interns"), None));
    }

    #[test]
    fn lists_show_tools_that_need_approval() {
        let p = rules();
        let alice = who("alice", &["eng"]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        let visible: Vec<&str> = ["transfer", "admin_reset", "add", "delete_row"]
            .into_iter()
            .filter(|t| p.visible(s, "tools/call", &tool(t)).allowed())
            .collect();
        assert_eq!(visible, ["transfer", "admin_reset", "add"]);
        assert!(p.may_use_server(s).allowed());
        assert!(p.has_approve_rules());
        assert!(!policy(json!([{"id": "a", "effect": "allow"}])).has_approve_rules());
    }

    #[test]
    fn approve_rules_without_a_tool_condition_and_on_other_targets_are_asked_too() {
        let p = policy(json!([
            {"id": "all", "effect": "allow"},
            {"id": "prompts", "effect": "approve", "prompts": ["secret_*"]},
            {"id": "billing", "effect": "approve", "servers": ["billing"]},
        ]));
        let alice = who("alice", &[]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        let none = Json::from_value(&json!({}));
        assert_eq!(p.approval(s, "prompts/get", &Target::Prompt(Cow::Borrowed("secret_plan")), &none), Some("prompts"));
        assert_eq!(p.approval(s, "prompts/get", &Target::Prompt(Cow::Borrowed("greeting")), &none), None);
        assert_eq!(p.approval(s, "tools/call", &tool("add"), &none), None);
        let billing = Subject { identity: Some(&alice), server: "billing" };
        assert_eq!(p.approval(billing, "tools/call", &tool("add"), &none), Some("billing"));
    }
}

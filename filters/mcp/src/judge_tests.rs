//! The ruling on plain messages: no host, no body parsing.

use super::*;
use crate::args;
use crate::config::PolicyConfig;
use serde_json::{json, Value};
use tollgate_core::identity::{Identity, Source};

fn policy(extra: Value) -> Policy {
    let mut cfg = json!({"rules": [
        {"id": "protocol", "effect": "allow", "principals": ["*"], "methods": ["initialize", "tools/list", "notifications/*"]},
        {"id": "basic", "effect": "allow", "principals": ["*"], "tools": ["add", "search"]},
        {"id": "no-admin", "effect": "deny", "principals": ["*"], "tools": ["admin_*"]},
    ]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            cfg[k] = v;
        }
    }
    let cfg: PolicyConfig = serde_json::from_value(cfg).unwrap();
    Policy::compile(&cfg, "policy").unwrap()
}

fn alice() -> Identity {
    Identity {
        principal: "alice".into(),
        team: None,
        groups: vec!["eng".into()],
        source: Source::Jwt,
        key_name: None,
        allowed_models: None,
        delegation: None,
    }
}

fn id(raw: &str) -> Option<&RawValue> {
    Some(serde_json::from_str::<&RawValue>(raw).unwrap())
}

fn call<'a>(raw_id: &'a str, tool: &'a str, arguments: Option<&'a str>) -> Message<'a> {
    Message {
        kind: Kind::Request,
        id: id(raw_id),
        method: Cow::Borrowed("tools/call"),
        target: Target::Tool(Cow::Borrowed(tool)),
        arguments: arguments.map(|a| args::parse(a).unwrap()),
    }
}

fn notification(method: &str) -> Message<'_> {
    Message { kind: Kind::Notification, id: None, method: Cow::Borrowed(method), target: Target::None, arguments: None }
}

fn response(raw_id: &str) -> Message<'_> {
    Message { kind: Kind::Response, id: id(raw_id), method: Cow::Borrowed(""), target: Target::None, arguments: None }
}

fn labels(j: &Judgement) -> Vec<&'static str> {
    j.records.iter().map(MessageRecord::label).collect()
}

#[test]
fn every_message_is_recorded_and_every_request_judged() {
    let who = alice();
    let subject = Subject { identity: Some(&who), server: "demo" };
    let messages = [
        call("1", "add", Some(r#"{"b":2,"a":1}"#)),
        call("\"x\"", "admin_reset", None),
        call("3", "unknown", None),
        notification("notifications/initialized"),
        response("7"),
    ];
    let p = policy(json!({}));
    let j = judge(&messages, Some(&p), subject, false);
    assert_eq!(
        j.rulings,
        [
            Ruling::Pass,
            Ruling::Denied { rule_id: Some("no-admin".into()) },
            Ruling::Denied { rule_id: None },
            Ruling::Pass,
            Ruling::Pass,
        ]
    );
    assert!(j.denied());
    assert_eq!(labels(&j), ["allow", "deny", "deny", "allow", "allow"]);
    let [add, admin, unknown, note, resp] = &j.records[..] else { panic!("five records") };
    assert_eq!(add.rule_id.as_deref(), Some("basic"));
    assert_eq!(add.detail.kind, Some("request"));
    assert_eq!(add.detail.method.as_deref(), Some("tools/call"));
    assert_eq!(add.detail.tool.as_deref(), Some("add"));
    assert_eq!(add.detail.jsonrpc_id.as_ref().map(|i| i.get()), Some("1"));
    assert_eq!(add.detail.arguments_sha256, Some(sha256_hex(br#"{"a":1,"b":2}"#)));
    assert!(add.detail.arguments.is_none());
    assert_eq!(admin.detail.reason.as_deref(), Some("denied by rule"));
    assert!(admin.enforced);
    assert_eq!(unknown.detail.reason.as_deref(), Some("no rule allows"));
    assert_eq!(unknown.rule_id, None);
    assert_eq!((note.detail.kind, note.detail.method.as_deref()), (Some("notification"), Some("notifications/initialized")));
    assert_eq!(note.rule_id, None, "only requests are judged");
    assert_eq!((resp.detail.kind, resp.detail.method.as_deref()), (Some("response"), None));
}

#[test]
fn without_a_policy_everything_passes() {
    let messages = [call("1", "admin_reset", Some(r#"{"z":[1, 2]}"#)), notification("notifications/whatever")];
    let j = judge(&messages, None, Subject { identity: None, server: "demo" }, true);
    assert_eq!(j.rulings, [Ruling::Pass, Ruling::Pass]);
    assert!(!j.denied());
    assert_eq!(labels(&j), ["allow", "allow"]);
    let args = j.records.first().and_then(|r| r.detail.arguments.as_ref()).map(|a| a.get());
    assert_eq!(args, Some(r#"{"z":[1,2]}"#), "audit_arguments keeps the canonical arguments");
}

#[test]
fn dry_run_denials_are_recorded_unenforced() {
    let who = alice();
    let p = policy(json!({"dry_run": true}));
    let messages = [call("1", "admin_reset", None)];
    let j = judge(&messages, Some(&p), Subject { identity: Some(&who), server: "demo" }, false);
    assert_eq!(j.rulings, [Ruling::Denied { rule_id: Some("no-admin".into()) }]);
    assert_eq!(labels(&j), ["dryrun_deny"]);
}

#[test]
fn rate_limits_count_the_allowed_calls_and_refuse_the_batch() {
    let who = alice();
    let p = policy(json!({}));
    let messages = [
        call("1", "add", None),
        notification("notifications/initialized"),
        call("2", "admin_reset", None),
        call("3", "search", None),
        Message { kind: Kind::Request, id: id("4"), method: Cow::Borrowed("tools/list"), target: Target::None, arguments: None },
    ];
    let mut j = judge(&messages, Some(&p), Subject { identity: Some(&who), server: "demo" }, false);
    assert_eq!(j.rate_limit_candidates(&messages), [(0, "add"), (3, "search")]);

    j.rate_limited(3, "per-tool", false);
    assert_eq!(j.rulings.get(3), Some(&Ruling::RateLimited { limit_id: "per-tool".into() }));
    j.refuse_batch(&messages, "another message in the batch was rate limited");
    assert_eq!(labels(&j), ["deny", "allow", "deny", "rate_limited", "deny"]);
    let reasons: Vec<Option<&str>> = j.records.iter().map(|r| r.detail.reason.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some("another message in the batch was rate limited"),
            None,
            Some("denied by rule"),
            Some(RATE_LIMITED),
            Some("another message in the batch was rate limited"),
        ]
    );
    assert_eq!(j.records.get(3).and_then(|r| r.rule_id.as_deref()), Some("per-tool"));

    let denied: Vec<Option<Option<&str>>> = denied_requests(&messages, &j.rulings).iter().map(|d| d.denied).collect();
    assert_eq!(denied, [None, Some(Some("no-admin")), Some(Some("per-tool")), None], "requests only");
}

#[test]
fn a_dry_run_rate_limit_is_recorded_unenforced() {
    let messages = [call("1", "add", None)];
    let mut j = judge(&messages, None, Subject { identity: None, server: "demo" }, false);
    j.rate_limited(0, "per-tool", true);
    assert_eq!(labels(&j), ["dryrun_rate_limited"]);
}

#[test]
fn a_session_request_needs_the_server() {
    let who = alice();
    let p = policy(json!({}));
    let (record, verdict) = session(Some(&p), Subject { identity: Some(&who), server: "demo" });
    assert_eq!((verdict, record.label(), record.rule_id.as_deref()), (Ruling::Pass, "allow", Some("protocol")));
    let (record, verdict) = session(Some(&p), Subject { identity: None, server: "demo" });
    assert_eq!((verdict, record.label()), (Ruling::Denied { rule_id: None }, "deny"));
    assert_eq!(record.detail.reason.as_deref(), Some("identity may not use this server"));
    let dry = policy(json!({"dry_run": true}));
    let (record, verdict) = session(Some(&dry), Subject { identity: None, server: "demo" });
    assert_eq!((verdict, record.label()), (Ruling::Denied { rule_id: None }, "dryrun_deny"));
    let (record, verdict) = session(None, Subject { identity: None, server: "demo" });
    assert_eq!((verdict, record.label(), record.rule_id), (Ruling::Pass, "allow", None));
}

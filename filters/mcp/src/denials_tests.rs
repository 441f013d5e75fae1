use super::*;
use crate::args;
use crate::config::{DenyStyle, PolicyConfig};
use crate::judge::{denied_requests, judge, Ruling};
use crate::message::{Message, Revision};
use crate::replies::denial;
use serde_json::{json, Value};
use std::borrow::Cow;
use tollgate_core::identity::{Identity, Source};
use tollgate_core::wire::jsonrpc::Kind;

fn policy() -> Policy {
    let cfg: PolicyConfig = serde_json::from_value(json!({"rules": [
        {"id": "db", "effect": "allow", "principals": ["alice"], "tools": ["query_db"],
         "arguments": [{"path": "$.table", "one_of": ["orders", "products"]}]},
        {"id": "greeting", "effect": "allow", "principals": ["alice"], "prompts": ["greeting"],
         "arguments": [{"path": "$.name", "regex": "^[a-z]+$"}]},
        {"id": "data", "effect": "allow", "principals": ["alice"], "resources": ["file:///data/*"],
         "methods": ["resources/read"]},
        {"id": "echo", "effect": "allow", "principals": ["alice"], "tools": ["echo"]},
        {"id": "no-secret-echo", "effect": "deny", "tools": ["echo"], "arguments": [{"path": "$.text", "regex": "secret"}]},
        {"id": "no-admin", "effect": "deny", "tools": ["admin_*"]},
        {"id": "admins", "effect": "allow", "principals": ["alice"], "tools": ["admin_*"]},
    ]}))
    .unwrap();
    Policy::compile(&cfg, "policy").unwrap()
}

fn alice() -> Identity {
    Identity { principal: "alice".into(), team: None, groups: vec![], source: Source::ApiKey, key_name: None, allowed_models: None, delegation: None }
}

fn request<'a>(method: &'a str, target: Target<'a>, arguments: &'a str) -> Message<'a> {
    Message {
        kind: Kind::Request,
        id: Some(serde_json::from_str::<&RawValue>("5").unwrap()),
        method: Cow::Borrowed(method),
        target,
        arguments: Some(args::parse(arguments).unwrap()),
    }
}

/// Judges one request as alice and answers it in `hide` style: (ruling, status, body).
fn hide(method: &str, target: Target<'_>, arguments: &str, revision: Revision) -> (Ruling, u32, Value) {
    let who = alice();
    let p = policy();
    let messages = [request(method, target, arguments)];
    let j = judge(&messages, Some(&p), Subject { identity: Some(&who), server: "demo" }, false);
    let denied = denied_requests(&messages, &j.rulings);
    let reply = denial(DenyStyle::Hide, revision, &denied, false, None);
    (j.rulings[0].clone(), reply.status, serde_json::from_slice(&reply.body).unwrap())
}

#[test]
fn a_listed_tool_refused_for_its_arguments_is_not_called_unknown() {
    for revision in Revision::ALL {
        let (ruling, status, body) = hide("tools/call", Target::Tool(Cow::Borrowed("query_db")), r#"{"table":"users"}"#, revision);
        assert_eq!(ruling, Ruling::DeniedShown { rule_id: None });
        assert_eq!(status, 403, "{revision:?}");
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -31403,
                   "message": "Not allowed: tools/call query_db with these arguments", "data": {"reason": "denied by policy"}}})
        );
    }
    // A deny rule with argument conditions does not hide a tool either; its id is not told.
    let (ruling, status, body) = hide("tools/call", Target::Tool(Cow::Borrowed("echo")), r#"{"text":"a secret"}"#, Revision::R2025_11_25);
    assert_eq!(ruling, Ruling::DeniedShown { rule_id: Some("no-secret-echo".into()) });
    assert_eq!(status, 403);
    assert_eq!(body["error"]["message"], "Not allowed: tools/call echo with these arguments");
    assert!(!body.to_string().contains("no-secret-echo"), "hide tells no rule id: {body}");
}

#[test]
fn what_the_lists_do_not_show_stays_unknown() {
    for revision in Revision::ALL {
        let modern = revision == Revision::R2026_07_28;
        // No rule allows alice `delete_row`; a deny without argument conditions hides `admin_reset`.
        for tool in ["delete_row", "admin_reset"] {
            let (ruling, status, body) = hide("tools/call", Target::Tool(Cow::Borrowed(tool)), "{}", revision);
            assert!(matches!(ruling, Ruling::Denied { .. }), "{tool}: {ruling:?}");
            assert_eq!(status, if modern { 400 } else { 200 });
            assert_eq!(body["error"], json!({"code": -32602, "message": format!("Unknown tool: {tool}")}));
        }
        let (_, _, body) = hide("resources/read", Target::Resource(Cow::Borrowed("file:///secret/k")), "{}", revision);
        assert_eq!(body["error"]["message"], "Unknown resource: file:///secret/k");
    }
}

#[test]
fn prompts_and_resources_the_caller_sees() {
    let (ruling, status, body) = hide("prompts/get", Target::Prompt(Cow::Borrowed("greeting")), r#"{"name":"Robert'); DROP"}"#, Revision::R2025_06_18);
    assert_eq!((ruling, status), (Ruling::DeniedShown { rule_id: None }, 403));
    assert_eq!(body["error"]["message"], "Not allowed: prompts/get greeting with these arguments");
    let (_, _, body) = hide("prompts/get", Target::Prompt(Cow::Borrowed("internal")), "{}", Revision::R2025_06_18);
    assert_eq!(body["error"]["message"], "Unknown prompt: internal");
    // A resource alice may read but not subscribe to (before 2026-07-28): listed, so refused
    // by name, not called unknown.
    let (ruling, status, body) =
        hide("resources/subscribe", Target::Resource(Cow::Borrowed("file:///data/a.txt")), "{}", Revision::R2025_11_25);
    assert_eq!((ruling, status), (Ruling::DeniedShown { rule_id: None }, 403));
    assert_eq!(body["error"]["message"], "Not allowed: resources/subscribe file:///data/a.txt");
    // Methods without a target keep `Method not found`.
    let (ruling, _, body) = hide("logging/setLevel", Target::None, "{}", Revision::R2025_11_25);
    assert_eq!(ruling, Ruling::Denied { rule_id: None });
    assert_eq!(body["error"]["code"], -32601);
}

#[test]
fn a_batch_answers_each_element_as_it_is_shown_and_keeps_200() {
    let who = alice();
    let p = policy();
    let messages = [
        request("tools/call", Target::Tool(Cow::Borrowed("query_db")), r#"{"table":"users"}"#),
        request("tools/call", Target::Tool(Cow::Borrowed("delete_row")), "{}"),
        request("tools/call", Target::Tool(Cow::Borrowed("echo")), r#"{"text":"hi"}"#),
    ];
    let j = judge(&messages, Some(&p), Subject { identity: Some(&who), server: "demo" }, false);
    let reply = denial(DenyStyle::Hide, Revision::R2025_03_26, &denied_requests(&messages, &j.rulings), true, None);
    assert_eq!(reply.status, 200);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v[0]["error"]["code"], -31403);
    assert_eq!(v[1]["error"]["message"], "Unknown tool: delete_row");
    assert_eq!(v[2]["error"]["message"], "Batch rejected");
}

#[test]
fn explain_is_unchanged() {
    let who = alice();
    let p = policy();
    let messages = [request("tools/call", Target::Tool(Cow::Borrowed("query_db")), r#"{"table":"users"}"#)];
    let j = judge(&messages, Some(&p), Subject { identity: Some(&who), server: "demo" }, false);
    let reply = denial(DenyStyle::Explain, Revision::R2025_11_25, &denied_requests(&messages, &j.rulings), false, None);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!((reply.status, v["error"]["message"].as_str()), (403, Some("Forbidden: tools/call query_db")));
    assert_eq!(v["error"]["data"]["reason"], "no policy rule allows this request");
}

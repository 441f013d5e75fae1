//! Unit tests of the compiled policy: plain rules, subjects and arguments, no host.

use super::*;
use serde_json::{json, Value};
use std::borrow::Cow;
use tollgate_core::identity::Source;

fn policy(rules: Value) -> Policy {
    let cfg: PolicyConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
    Policy::compile(&cfg, "policy").unwrap()
}

fn compile_err(rules: Value) -> String {
    let cfg: PolicyConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
    Policy::compile(&cfg, "policy").unwrap_err().0
}

fn who(principal: &str, groups: &[&str]) -> Identity {
    Identity {
        principal: principal.into(),
        team: Some("payments".into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        source: Source::Jwt,
        key_name: None,
        allowed_models: None,
        delegation: None,
    }
}

fn tool(name: &str) -> Target<'_> {
    Target::Tool(Cow::Borrowed(name))
}

fn demo() -> Policy {
    policy(json!([
        {"id": "protocol", "effect": "allow", "methods": ["initialize", "ping", "notifications/*", "tools/list"]},
        {"id": "basic", "effect": "allow", "tools": ["add", "echo"]},
        {"id": "db", "effect": "allow", "tools": ["query_db"], "arguments": [{"path": "$.table", "one_of": ["orders", "products"]}]},
        {"id": "money", "effect": "allow", "groups": ["finance"], "tools": ["transfer"], "arguments": [{"path": "$.amount", "lte": 1000}]},
        {"id": "no-admin", "effect": "deny", "tools": ["admin_*"]},
        {"id": "admins", "effect": "allow", "groups": ["admins"]},
        {"id": "no-mallory", "effect": "deny", "principals": ["mallory"]},
    ]))
}

#[test]
fn deny_wins_and_default_denies() {
    let p = demo();
    let alice = who("alice", &["eng"]);
    let s = Subject { identity: Some(&alice), server: "demo" };
    let v = p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({})));
    assert_eq!(v, Verdict { effect: Effect::Allow, rule_id: Some("basic") });
    let v = p.decide(s, "tools/call", &tool("delete_row"), &Json::from_value(&json!({})));
    assert_eq!(v, Verdict { effect: Effect::Deny, rule_id: None });
    let root = who("root", &["admins"]);
    let s = Subject { identity: Some(&root), server: "demo" };
    assert!(p.decide(s, "tools/call", &tool("delete_row"), &Json::from_value(&json!({}))).allowed());
    let v = p.decide(s, "tools/call", &tool("admin_reset"), &Json::from_value(&json!({})));
    assert_eq!(v, Verdict { effect: Effect::Deny, rule_id: Some("no-admin") });
    let mallory = who("mallory", &["admins"]);
    let s = Subject { identity: Some(&mallory), server: "demo" };
    assert_eq!(p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({}))).rule_id, Some("no-mallory"));
}

#[test]
fn argument_rules_at_the_boundary() {
    let p = demo();
    let bob = who("bob", &["finance"]);
    let s = Subject { identity: Some(&bob), server: "demo" };
    let call = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).allowed();
    assert!(call("query_db", json!({"table": "orders", "sql": "x"})));
    assert!(call("query_db", json!({"table": "products"})));
    assert!(!call("query_db", json!({"table": "customers"})));
    assert!(!call("query_db", json!({"sql": "x"})));
    assert!(!call("query_db", json!({"table": ["orders"]})));
    assert!(call("transfer", json!({"amount": 1000, "to": "x"})));
    assert!(call("transfer", json!({"amount": 1000.0})));
    assert!(call("transfer", json!({"amount": "999.5"})));
    assert!(!call("transfer", json!({"amount": 1000.01})));
    assert!(!call("transfer", json!({"amount": 1001})));
    assert!(!call("transfer", json!({"amount": "1e9"})));
    assert!(!call("transfer", json!({"amount": "NaN"})));
    assert!(!call("transfer", json!({"amount": null})));
    assert!(!call("transfer", json!({})));
    let eve = who("eve", &["eng"]);
    let s = Subject { identity: Some(&eve), server: "demo" };
    assert!(!p.decide(s, "tools/call", &tool("transfer"), &Json::from_value(&json!({"amount": 1}))).allowed());
}

#[test]
fn list_visibility() {
    let p = demo();
    let alice = who("alice", &["eng"]);
    let s = Subject { identity: Some(&alice), server: "demo" };
    let shown: Vec<&str> = ["add", "echo", "query_db", "transfer", "delete_row", "admin_reset"]
        .into_iter()
        .filter(|t| p.visible(s, "tools/call", &tool(t)).allowed())
        .collect();
    assert_eq!(shown, ["add", "echo", "query_db"]);
    let bob = who("bob", &["finance"]);
    let s = Subject { identity: Some(&bob), server: "demo" };
    assert!(p.visible(s, "tools/call", &tool("transfer")).allowed());
    // A deny with argument conditions does not hide the tool.
    let p = policy(json!([
        {"id": "all", "effect": "allow"},
        {"id": "big", "effect": "deny", "tools": ["transfer"], "arguments": [{"path": "$.amount", "gt": 10}]},
    ]));
    assert!(p.visible(s, "tools/call", &tool("transfer")).allowed());
    assert!(!p.decide(s, "tools/call", &tool("transfer"), &Json::from_value(&json!({"amount": 11}))).allowed());
}

#[test]
fn identity_conditions_and_anonymous() {
    let p = policy(json!([
        {"id": "authn", "effect": "allow", "principals": ["*"], "tools": ["add"]},
        {"id": "team", "effect": "allow", "teams": ["pay*"], "tools": ["echo"]},
        {"id": "open", "effect": "allow", "methods": ["ping"]},
    ]));
    let anon = Subject { identity: None, server: "demo" };
    assert!(!p.decide(anon, "tools/call", &tool("add"), &Json::from_value(&json!({}))).allowed());
    assert!(p.decide(anon, "ping", &Target::None, &Json::from_value(&json!({}))).allowed());
    let alice = who("alice", &[]);
    let s = Subject { identity: Some(&alice), server: "demo" };
    assert!(p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({}))).allowed());
    assert!(p.decide(s, "tools/call", &tool("echo"), &Json::from_value(&json!({}))).allowed());
    // Rules with a target condition do not match messages without a target.
    assert!(!p.decide(s, "tools/list", &Target::None, &Json::from_value(&json!({}))).allowed());
}

#[test]
fn servers_and_session_methods() {
    let p = policy(json!([
        {"id": "a-on-x", "effect": "allow", "principals": ["alice"], "servers": ["x"], "tools": ["add"]},
        {"id": "ban", "effect": "deny", "principals": ["bob"], "servers": ["x"]},
        {"id": "bob", "effect": "allow", "principals": ["bob"]},
    ]));
    let alice = who("alice", &[]);
    let bob = who("bob", &[]);
    assert!(p.may_use_server(Subject { identity: Some(&alice), server: "x" }).allowed());
    assert!(!p.may_use_server(Subject { identity: Some(&alice), server: "y" }).allowed());
    assert_eq!(p.may_use_server(Subject { identity: Some(&bob), server: "x" }).rule_id, Some("ban"));
    assert!(p.may_use_server(Subject { identity: Some(&bob), server: "y" }).allowed());
    assert!(!p.may_use_server(Subject { identity: None, server: "x" }).allowed());
    let s = Subject { identity: Some(&alice), server: "y" };
    assert!(!p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({}))).allowed());
}

#[test]
fn prompts_and_resources() {
    let p = policy(json!([
        {"id": "data", "effect": "allow", "resources": ["file:///data/*"], "prompts": ["greeting"]},
    ]));
    let s = Subject { identity: None, server: "demo" };
    let res = |u: &'static str| Target::Resource(Cow::Borrowed(u));
    assert!(p.decide(s, "resources/read", &res("file:///data/readme.txt"), &Json::from_value(&json!({}))).allowed());
    assert!(!p.decide(s, "resources/read", &res("file:///secret/keys.txt"), &Json::from_value(&json!({}))).allowed());
    assert!(p.decide(s, "prompts/get", &Target::Prompt(Cow::Borrowed("greeting")), &Json::from_value(&json!({}))).allowed());
    assert!(!p.decide(s, "tools/call", &tool("greeting"), &Json::from_value(&json!({}))).allowed());
}

#[test]
fn argument_tests() {
    let p = policy(json!([
        {"id": "eq", "effect": "allow", "tools": ["eq"], "arguments": [{"path": "$.mode", "equals": "ro"}, {"path": "$.n", "equals": 2}]},
        {"id": "re", "effect": "allow", "tools": ["sql"], "arguments": [{"path": "$.sql", "regex": "(?i)^\\s*select\\b"}]},
        {"id": "ex", "effect": "allow", "tools": ["ex"], "arguments": [{"path": "$.force", "exists": false}]},
        {"id": "all", "effect": "allow", "tools": ["pay"], "arguments": [{"path": "$.items[*].amount", "lt": 100}]},
        {"id": "any", "effect": "deny", "tools": ["pay"], "arguments": [{"path": "$.items[*].to", "equals": "evil"}]},
        {"id": "nested", "effect": "allow", "tools": ["nested"], "arguments": [{"path": "$.opts.depth", "gte": 1, "lte": 3}]},
    ]));
    let s = Subject { identity: None, server: "demo" };
    let call = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).allowed();
    assert!(call("eq", json!({"mode": "ro", "n": 2.0})));
    assert!(!call("eq", json!({"mode": "rw", "n": 2})));
    assert!(call("sql", json!({"sql": "  SELECT * from t"})));
    assert!(!call("sql", json!({"sql": "delete from t"})));
    assert!(!call("sql", json!({"sql": 5})));
    assert!(call("ex", json!({})));
    assert!(!call("ex", json!({"force": false})));
    assert!(call("pay", json!({"items": [{"amount": 1, "to": "a"}, {"amount": 99, "to": "b"}]})));
    assert!(!call("pay", json!({"items": [{"amount": 1, "to": "a"}, {"amount": 100, "to": "b"}]})));
    assert!(!call("pay", json!({"items": [{"amount": 1, "to": "evil"}, {"amount": 2, "to": "b"}]})));
    assert!(!call("pay", json!({"items": []})));
    assert!(call("nested", json!({"opts": {"depth": 3}})));
    assert!(!call("nested", json!({"opts": {"depth": 4}})));
    assert!(!call("nested", json!({"opts": {"depth": 0}})));
}

#[test]
fn deny_conditions_fail_closed_on_values_they_cannot_test() {
    let p = policy(json!([
        {"id": "files", "effect": "allow", "tools": ["read_file", "pay", "run", "tag"]},
        {"id": "no-etc", "effect": "deny", "tools": ["read_file"], "arguments": [{"path": "$.path", "regex": "^/etc/"}]},
        {"id": "no-big", "effect": "deny", "tools": ["pay"], "arguments": [{"path": "$.amount", "gt": 1000}]},
        {"id": "no-rm", "effect": "deny", "tools": ["run"], "arguments": [{"path": "$.cmd", "one_of": ["rm", "dd"]}]},
        {"id": "no-pair", "effect": "deny", "tools": ["tag"], "arguments": [{"path": "$.tags", "equals": ["a", "b"]}]},
    ]));
    let s = Subject { identity: None, server: "demo" };
    let rule = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).rule_id;
    // Testable values: the deny decides by the test.
    assert_eq!(rule("read_file", json!({"path": "/etc/passwd"})), Some("no-etc"));
    assert_eq!(rule("read_file", json!({"path": "/tmp/x"})), Some("files"));
    // Arrays: any element that matches (or cannot be tested) denies.
    assert_eq!(rule("read_file", json!({"path": ["/etc/passwd"]})), Some("no-etc"));
    assert_eq!(rule("read_file", json!({"path": ["/tmp/x", ["/etc/shadow"]]})), Some("no-etc"));
    assert_eq!(rule("read_file", json!({"path": ["/tmp/x", 5]})), Some("no-etc"));
    assert_eq!(rule("read_file", json!({"path": ["/tmp/x", "/tmp/y"]})), Some("files"));
    assert_eq!(rule("read_file", json!({"path": []})), Some("files"));
    // Present but of a type the test cannot read: denied.
    for odd in [json!(5), json!(true), json!(null), json!({"p": "/etc/passwd"})] {
        assert_eq!(rule("read_file", json!({"path": odd})), Some("no-etc"), "{odd}");
    }
    // Absent: the condition does not hold.
    assert_eq!(rule("read_file", json!({})), Some("files"));
    // Ranges read numbers and numeric strings; anything else denies.
    assert_eq!(rule("pay", json!({"amount": 5})), Some("files"));
    assert_eq!(rule("pay", json!({"amount": "5000"})), Some("no-big"));
    for odd in [json!("lots"), json!("NaN"), json!({"v": 5}), json!(null), json!([1, 2000])] {
        assert_eq!(rule("pay", json!({"amount": odd})), Some("no-big"), "{odd}");
    }
    assert_eq!(rule("pay", json!({"amount": [1, 2]})), Some("files"));
    // equals / one_of read values of an expected value's type.
    assert_eq!(rule("run", json!({"cmd": "ls"})), Some("files"));
    assert_eq!(rule("run", json!({"cmd": ["ls", "rm"]})), Some("no-rm"));
    assert_eq!(rule("run", json!({"cmd": 0})), Some("no-rm"));
    assert_eq!(rule("run", json!({"cmd": {"name": "rm"}})), Some("no-rm"));
    // An expected array compares arrays whole.
    assert_eq!(rule("tag", json!({"tags": ["a", "b"]})), Some("no-pair"));
    assert_eq!(rule("tag", json!({"tags": ["a"]})), Some("files"));
    assert_eq!(rule("tag", json!({"tags": "a"})), Some("no-pair"));
}

#[test]
fn allow_conditions_are_not_satisfied_by_values_they_cannot_test() {
    let p = policy(json!([
        {"id": "tmp", "effect": "allow", "tools": ["read_file"], "arguments": [{"path": "$.path", "regex": "^/tmp/"}]},
        {"id": "small", "effect": "allow", "tools": ["pay"], "arguments": [{"path": "$.amount", "lte": 10}]},
        {"id": "tables", "effect": "allow", "tools": ["query"], "arguments": [{"path": "$.table", "one_of": ["orders"]}]},
        {"id": "any-tmp", "effect": "allow", "tools": ["many"], "arguments": [{"path": "$.paths[*]", "regex": "^/tmp/", "match": "any"}]},
    ]));
    let s = Subject { identity: None, server: "demo" };
    let allowed = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).allowed();
    assert!(allowed("read_file", json!({"path": "/tmp/x"})));
    for odd in [json!(["/tmp/x"]), json!(5), json!(null), json!({"p": "/tmp/x"})] {
        assert!(!allowed("read_file", json!({"path": odd})), "{odd}");
    }
    assert!(allowed("pay", json!({"amount": "10"})));
    assert!(!allowed("pay", json!({"amount": [1]})));
    assert!(!allowed("pay", json!({"amount": "ten"})));
    assert!(!allowed("query", json!({"table": ["orders"]})));
    assert!(!allowed("query", json!({"table": 1})));
    // `match: any`: one readable value that passes is enough; the others are not tested.
    assert!(allowed("many", json!({"paths": [5, "/tmp/x"]})));
    assert!(!allowed("many", json!({"paths": [5, "/etc/x"]})));
}

/// A policy from JSON text, numbers as written (a `serde_json::Value` would round them).
fn policy_text(rules: &str) -> Policy {
    let cfg: PolicyConfig = serde_json::from_str(&format!(r#"{{"rules": {rules}}}"#)).unwrap();
    Policy::compile(&cfg, "policy").unwrap()
}

/// The deciding rule of an allowed call of `t` (arguments as JSON text); `-denied` if denied.
fn decide_text<'p>(p: &'p Policy, t: &str, args: &str) -> Option<&'p str> {
    let args = args::parse(args).unwrap();
    let v = p.decide(Subject { identity: None, server: "demo" }, "tools/call", &tool(t), &args);
    if v.allowed() { v.rule_id } else { Some("-denied") }
}

#[test]
fn integers_compare_exactly_whatever_their_size() {
    let p = policy_text(r#"[
        {"id": "one-id", "effect": "allow", "tools": ["get"], "arguments": [{"path": "$.id", "one_of": [9007199254740993, 1234567890123456789]}]},
        {"id": "eq", "effect": "allow", "tools": ["eq"], "arguments": [{"path": "$.n", "equals": 1000}]},
        {"id": "big", "effect": "allow", "tools": ["big"], "arguments": [{"path": "$.n", "equals": 123456789012345678901234567890}]}
    ]"#);
    let allowed = |t: &str, a: &str| decide_text(&p, t, a) != Some("-denied");
    assert!(allowed("get", r#"{"id": 9007199254740993}"#));
    assert!(!allowed("get", r#"{"id": 9007199254740992}"#), "the same double, another integer");
    assert!(!allowed("get", r#"{"id": 9007199254740994}"#));
    assert!(allowed("get", r#"{"id": 1234567890123456789}"#));
    for near in ["1234567890123456800", "1234567890123456788", "1234567890123456790", "1234567890123456768"] {
        assert!(!allowed("get", &format!(r#"{{"id": {near}}}"#)), "{near}");
    }
    // The same value spelled otherwise is the same number.
    assert!(allowed("get", r#"{"id": 1.234567890123456789e18}"#));
    assert!(allowed("get", r#"{"id": 9007199254740993.000}"#));
    for same in ["1000", "1000.0", "1e3", "10000e-1", "1E+3"] {
        assert!(allowed("eq", &format!(r#"{{"n": {same}}}"#)), "{same}");
    }
    assert!(!allowed("eq", r#"{"n": 1000.0000000000001}"#));
    assert!(!allowed("eq", r#"{"n": 1000.00000000000000000001}"#), "rounds to 1000.0 but is not 1000");
    assert!(allowed("big", r#"{"n": 123456789012345678901234567890}"#));
    assert!(!allowed("big", r#"{"n": 123456789012345678901234567891}"#));
    // -0 is 0.
    let p = policy_text(r#"[{"id": "z", "effect": "allow", "arguments": [{"path": "$.n", "equals": 0}]}]"#);
    assert_eq!(decide_text(&p, "x", r#"{"n": -0.0}"#), Some("z"));
}

#[test]
fn deny_rules_match_numbers_by_either_reading() {
    let p = policy_text(r#"[
        {"id": "all", "effect": "allow"},
        {"id": "no-id", "effect": "deny", "arguments": [{"path": "$.id", "equals": 9007199254740993}]},
        {"id": "no-big", "effect": "deny", "arguments": [{"path": "$.amount", "gte": 1000}]}
    ]"#);
    assert_eq!(decide_text(&p, "x", r#"{"id": 9007199254740993}"#), Some("-denied"));
    // A server reading doubles acts on the denied id.
    assert_eq!(decide_text(&p, "x", r#"{"id": 9007199254740992}"#), Some("-denied"));
    assert_eq!(decide_text(&p, "x", r#"{"id": 9007199254740995}"#), Some("all"));
    assert_eq!(decide_text(&p, "x", r#"{"amount": 999.99}"#), Some("all"));
    // Exactly below 1000, but 1000.0 as a double.
    assert_eq!(decide_text(&p, "x", r#"{"amount": 999.99999999999999999999}"#), Some("-denied"));
    assert_eq!(decide_text(&p, "x", r#"{"amount": "999.99999999999999999999"}"#), Some("-denied"));
}

#[test]
fn ranges_read_every_digit() {
    let p = policy_text(r#"[
        {"id": "small", "effect": "allow", "tools": ["pay"], "arguments": [{"path": "$.amount", "lte": 1000}]},
        {"id": "under", "effect": "allow", "tools": ["under"], "arguments": [{"path": "$.amount", "lt": 1000}]},
        {"id": "exact-bound", "effect": "allow", "tools": ["b"], "arguments": [{"path": "$.n", "gt": 9007199254740992}]}
    ]"#);
    let allowed = |t: &str, a: &str| decide_text(&p, t, a) != Some("-denied");
    assert!(allowed("pay", r#"{"amount": 1000}"#));
    assert!(allowed("pay", r#"{"amount": 1e3}"#));
    assert!(allowed("pay", r#"{"amount": "1000.000"}"#));
    assert!(!allowed("pay", r#"{"amount": 1000.0000000000001}"#), "17 significant digits");
    assert!(!allowed("pay", r#"{"amount": "1000.0000000000001"}"#));
    assert!(!allowed("pay", r#"{"amount": 1000.00000000000000000001}"#), "not 1000 exactly");
    // Exactly below 1000 but 1000.0 as a double: a float-reading server would act on 1000.
    assert!(!allowed("under", r#"{"amount": 999.99999999999999999999}"#));
    assert!(allowed("under", r#"{"amount": 999.9999999999}"#));
    assert!(allowed("b", r#"{"n": 9007199254740994}"#));
    assert!(!allowed("b", r#"{"n": 9007199254740993}"#), "above the bound exactly, not as a double");
}

#[test]
fn strings_holding_json_are_judged_as_both() {
    let p = policy_text(r#"[
        {"id": "all", "effect": "allow", "tools": ["export_rows", "read", "deep", "cfg"]},
        {"id": "no-users", "effect": "deny", "tools": ["export_rows"], "arguments": [{"path": "$.tables", "one_of": ["users"]}]},
        {"id": "no-etc", "effect": "deny", "tools": ["read"], "arguments": [{"path": "$.paths[*]", "regex": "^/etc/"}]},
        {"id": "no-admin", "effect": "deny", "tools": ["cfg"], "arguments": [{"path": "$..mode", "equals": "admin"}]},
        {"id": "no-all", "effect": "deny", "tools": ["deep"], "arguments": [{"path": "$.t[*]", "equals": "x", "match": "all"}]}
    ]"#);
    let rule = |t: &str, a: &str| decide_text(&p, t, a);
    // The finding: a JSON array inside a string.
    assert_eq!(rule("export_rows", r#"{"tables": ["users"]}"#), Some("-denied"));
    assert_eq!(rule("export_rows", r#"{"tables": "[\"users\"]"}"#), Some("-denied"));
    assert_eq!(rule("export_rows", r#"{"tables": " \n[\"orders\", \"users\"]\t"}"#), Some("-denied"));
    assert_eq!(rule("export_rows", r#"{"tables": "[\"orders\"]"}"#), Some("all"));
    assert_eq!(rule("export_rows", r#"{"tables": "users"}"#), Some("-denied"));
    assert_eq!(rule("export_rows", r#"{"tables": "orders"}"#), Some("all"));
    // `null` in a string: a value the test cannot read.
    assert_eq!(rule("export_rows", r#"{"tables": "null"}"#), Some("-denied"));
    // Looks like JSON but is not JSON the filter reads (Python's json reads NaN).
    assert_eq!(rule("export_rows", r#"{"tables": "[\"users\", NaN]"}"#), Some("-denied"));
    assert_eq!(rule("export_rows", r#"{"tables": "[draft"}"#), Some("-denied"));
    // Paths go into the JSON a string holds, at any depth, also nested twice.
    assert_eq!(rule("read", r#"{"paths": "[\"/tmp/a\", \"/etc/passwd\"]"}"#), Some("-denied"));
    assert_eq!(rule("read", r#"{"paths": "[\"/tmp/a\"]"}"#), Some("all"));
    assert_eq!(rule("cfg", r#"{"opts": "{\"mode\": \"admin\"}"}"#), Some("-denied"));
    assert_eq!(rule("cfg", r#"{"opts": {"x": "{\"inner\": \"{\\\"mode\\\": \\\"admin\\\"}\"}"}}"#), Some("-denied"));
    assert_eq!(rule("cfg", r#"{"opts": "{\"mode\": \"user\"}"}"#), Some("all"));
    // `match: all` in a deny: the arguments as written or read as JSON.
    assert_eq!(rule("deep", r#"{"t": "[\"x\", \"x\"]"}"#), Some("-denied"));
    assert_eq!(rule("deep", r#"{"t": "[\"x\", \"y\"]"}"#), Some("all"));
}

#[test]
fn allow_rules_need_both_readings_of_strings_holding_json() {
    let p = policy_text(r#"[
        {"id": "orders", "effect": "allow", "tools": ["export_rows"], "arguments": [{"path": "$.tables[*]", "one_of": ["orders"]}]},
        {"id": "loose", "effect": "allow", "tools": ["q"], "arguments": [{"path": "$.table", "regex": "orders"}]},
        {"id": "no-force", "effect": "allow", "tools": ["f"], "arguments": [{"path": "$.opts.force", "exists": false}]},
        {"id": "text", "effect": "allow", "tools": ["t"], "arguments": [{"path": "$.note", "regex": "^"}]}
    ]"#);
    let rule = |t: &str, a: &str| decide_text(&p, t, a);
    assert_eq!(rule("export_rows", r#"{"tables": ["orders"]}"#), Some("orders"));
    assert_eq!(rule("export_rows", r#"{"tables": "[\"orders\"]"}"#), Some("-denied"));
    assert_eq!(rule("q", r#"{"table": "orders"}"#), Some("loose"));
    assert_eq!(rule("q", r#"{"table": "[\"orders\", \"users\"]"}"#), Some("-denied"));
    assert_eq!(rule("f", r#"{"opts": {}}"#), Some("no-force"));
    assert_eq!(rule("f", r#"{"opts": "{\"force\": true}"}"#), Some("-denied"));
    // Plain strings, also with brackets inside, are strings.
    assert_eq!(rule("t", r#"{"note": "see [1]"}"#), Some("text"));
    assert_eq!(rule("t", r#"{"note": "[draft"}"#), Some("-denied"));
}

#[test]
fn bad_rules_are_refused_with_the_rule_named() {
    let e = compile_err(json!([{"id": "r1", "effect": "allow", "arguments": [{"path": "$.[[", "exists": true}]}]));
    assert!(e.starts_with("policy.rules[0].arguments[0].path: invalid JSONPath"), "{e}");
    assert!(e.contains("rule `r1`"), "{e}");
    let e = compile_err(json!([{"id": "ok", "effect": "allow"}, {"id": "r2", "effect": "deny", "arguments": [{"path": "$.a", "regex": "(unclosed"}]}]));
    assert!(e.starts_with("policy.rules[1].arguments[0].regex: invalid regex"), "{e}");
    assert!(e.contains("rule `r2`"), "{e}");
    let e = compile_err(json!([{"id": "r", "effect": "allow", "arguments": [{"path": "$.a", "equals": 1, "exists": true}]}]));
    assert!(e.contains("exactly one test"), "{e}");
    let e = compile_err(json!([{"id": "r", "effect": "allow", "arguments": [{"path": "$.a"}]}]));
    assert!(e.contains("exactly one test"), "{e}");
    let e = compile_err(json!([{"id": "r", "effect": "allow", "arguments": [{"path": "a.b", "exists": true}]}]));
    assert!(e.contains("must start with `$`"), "{e}");
    let e = compile_err(json!([{"id": "r", "effect": "allow"}, {"id": "r", "effect": "deny"}]));
    assert!(e.starts_with("policy.rules[1].id: duplicate"), "{e}");
    let e = compile_err(json!([{"id": " ", "effect": "allow"}]));
    assert!(e.starts_with("policy.rules[0].id"), "{e}");
}

#[test]
fn empty_policy_denies_everything() {
    let p = policy(json!([]));
    assert!(!p.decide(Subject { identity: None, server: "x" }, "ping", &Target::None, &Json::from_value(&json!({}))).allowed());
}

#[test]
fn the_tool_index_decides_exactly_as_the_full_rule_list() {
    let policy = policy(json!([
        {"id": "a", "effect": "allow", "tools": ["t1", "t2"]},
        {"id": "b", "effect": "allow", "tools": ["t*"], "arguments": [{"path": "$.x", "equals": 1}]},
        {"id": "c", "effect": "deny", "tools": ["t2"], "arguments": [{"path": "$.x", "equals": 2}]},
        {"id": "d", "effect": "allow", "methods": ["tools/call"]},
        {"id": "e", "effect": "deny", "tools": ["t3", "t1"], "principals": ["mallory"]},
        {"id": "f", "effect": "allow", "tools": ["t3"]}
    ]));
    let alice = who("alice", &[]);
    let mallory = who("mallory", &[]);
    for caller in [None, Some(&alice), Some(&mallory)] {
        for tool in ["t1", "t2", "t3", "t4", "x"] {
            for value in [json!({}), json!({"x": 1}), json!({"x": 2})] {
                let args = Json::from_value(&value);
                let subject = Subject { identity: caller, server: "s" };
                let target = Target::Tool(Cow::Borrowed(tool));
                let indexed = policy.decide(subject, "tools/call", &target, &args);
                let full = policy.decide_among(policy.rules.iter(), subject, "tools/call", &target, &args);
                assert_eq!(indexed, full, "{caller:?} {tool} {value}");
            }
        }
    }
    assert_eq!(policy.tools.other, vec![1, 3]);
}

#[test]
fn rules_combine_by_deny_overrides_the_only_value() {
    let cfg: PolicyConfig = serde_json::from_value(json!({ "combining": "deny_overrides", "rules": [] })).unwrap();
    assert!(Policy::compile(&cfg, "policy").is_ok());
    let cfg: PolicyConfig = serde_json::from_value(json!({ "combining": "first_match", "rules": [] })).unwrap();
    let err = Policy::compile(&cfg, "policy").unwrap_err();
    assert!(err.0.starts_with("policy.combining: "), "{err}");
    assert!(serde_json::from_value::<PolicyConfig>(json!({ "combining": "deny_wins" })).is_err());
}

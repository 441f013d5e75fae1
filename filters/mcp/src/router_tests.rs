//! Names behind Envoy's mcp_router, read with plain values: no host, no body parsing.

use super::*;
use crate::config::PolicyConfig;
use crate::judge::judge;
use serde_json::{json, Value};
use serde_json::value::RawValue;
use tollgate_core::identity::{Identity, Source};
use tollgate_core::wire::jsonrpc::Kind;

fn router() -> Router {
    let cfg: RouterConfig = serde_json::from_value(json!({"servers": ["alpha", "beta"]})).unwrap();
    Router::compile(&cfg, "server.routers.tools").unwrap()
}

fn compile(cfg: Value) -> Result<Router, String> {
    let cfg: RouterConfig = serde_json::from_value(cfg).map_err(|e| e.to_string())?;
    Router::compile(&cfg, "server.routers.tools").map_err(|e| e.0)
}

fn policy() -> Policy {
    let cfg: PolicyConfig = serde_json::from_value(json!({"rules": [
        {"id": "protocol", "effect": "allow", "methods": ["initialize", "tools/list", "prompts/list", "resources/list"]},
        {"id": "add-anywhere", "effect": "allow", "principals": ["*"], "tools": ["add"]},
        {"id": "delete-on-alpha", "effect": "allow", "principals": ["alice"], "servers": ["alpha"], "tools": ["delete_row"]},
        {"id": "no-delete-on-beta", "effect": "deny", "servers": ["beta"], "tools": ["delete_row"]},
        {"id": "alpha-data", "effect": "allow", "servers": ["alpha"], "resources": ["file:///data/*"], "prompts": ["greeting"]},
    ]}))
    .unwrap();
    Policy::compile(&cfg, "policy").unwrap()
}

fn alice() -> Identity {
    Identity { principal: "alice".into(), team: None, groups: vec![], source: Source::ApiKey, key_name: None, allowed_models: None, delegation: None }
}

fn id(raw: &str) -> Option<&RawValue> {
    Some(serde_json::from_str::<&RawValue>(raw).unwrap())
}

fn request<'a>(raw_id: &'a str, method: &'a str, target: Target<'a>) -> Message<'a> {
    Message { kind: Kind::Request, id: id(raw_id), method: Cow::Borrowed(method), target, arguments: None }
}

fn tool(name: &str) -> Target<'_> {
    Target::Tool(Cow::Borrowed(name))
}

#[test]
fn names_split_at_the_first_separator_as_the_router_does() {
    let r = router();
    assert_eq!(r.split_name("alpha__echo"), Some(("alpha", "echo")));
    assert_eq!(r.split_name("beta__a__b"), Some(("beta", "a__b")));
    assert_eq!(r.split_name("alpha__"), Some(("alpha", "")));
    assert_eq!(r.split_name("gamma__echo"), None);
    assert_eq!(r.split_name("echo"), None);
    assert_eq!(r.split_name("alph__echo"), None);
    assert_eq!(r.split_name("_alpha__echo"), None);
    assert_eq!(r.split_name("alpha_echo"), None);
}

#[test]
fn uris_carry_the_server_before_the_scheme() {
    let r = router();
    assert_eq!(r.split_uri("alpha+file:///data/readme.txt"), Some(("alpha", "file:///data/readme.txt".to_string())));
    assert_eq!(r.split_uri("beta+https://x.example/a+b://c"), Some(("beta", "https://x.example/a+b://c".to_string())));
    assert_eq!(r.split_uri("beta+weird+scheme://x"), Some(("beta", "weird+scheme://x".to_string())));
    assert_eq!(r.split_uri("file:///data/readme.txt"), None);
    assert_eq!(r.split_uri("gamma+file:///x"), None);
    assert_eq!(r.split_uri("alpha+file"), None);
    assert_eq!(r.split_uri("file:///alpha+x://y"), None);
}

#[test]
fn targets_route_to_their_backend_or_nowhere() {
    let r = router();
    assert_eq!(r.route_target(&Target::None), None);
    assert_eq!(
        r.route_target(&Target::Prompt(Cow::Borrowed("beta__greeting"))),
        Some(Route::Backend { server: "beta", target: Target::Prompt(Cow::Owned("greeting".into())) })
    );
    assert_eq!(
        r.route_target(&Target::Resource(Cow::Borrowed("alpha+file:///x"))),
        Some(Route::Backend { server: "alpha", target: Target::Resource(Cow::Owned("file:///x".into())) })
    );
    assert_eq!(r.route_target(&tool("add")), Some(Route::Unknown));
}

#[test]
fn bad_router_configs_are_refused_naming_the_field() {
    assert!(compile(json!({"servers": ["alpha", "beta-2", "c_d"]})).is_ok());
    let cases = [
        (json!({"servers": ["alpha"]}), "server.routers.tools.servers: needs at least two"),
        (json!({"servers": ["alpha", "alpha"]}), "server.routers.tools.servers[1]: `alpha` is listed twice"),
        (json!({"servers": ["alpha", "be.ta"]}), "server.routers.tools.servers[1]: `be.ta` must be"),
        (json!({"servers": ["alpha", ""]}), "server.routers.tools.servers[1]: `` must be"),
        (json!({"servers": ["a__b", "beta"]}), "server.routers.tools.servers[0]: `a__b` cannot be read back"),
        (json!({"servers": ["alpha", "beta_"]}), "server.routers.tools.servers[1]: `beta_` cannot be read back"),
        (json!({"servers": ["alpha", "beta"], "name_separator": ""}), "server.routers.tools.name_separator: must be"),
    ];
    for (cfg, expected) in cases {
        let err = compile(cfg.clone()).unwrap_err();
        assert!(err.starts_with(expected), "{cfg}: {err}");
    }
    assert!(compile(json!({"servers": ["alpha", "beta"], "prefix": "x"})).unwrap_err().contains("unknown field `prefix`"));
    assert!(compile(json!({"servers": ["alpha", "beta"], "name_separator": "."})).is_ok());
}

#[test]
fn a_call_is_judged_on_its_backend_by_the_name_it_knows_and_replied_to_by_the_name_sent() {
    let r = router();
    let p = policy();
    let who = alice();
    for (name, server, allowed, rule) in [
        ("alpha__delete_row", "alpha", true, Some("delete-on-alpha")),
        ("beta__delete_row", "beta", false, Some("no-delete-on-beta")),
        ("beta__add", "beta", true, Some("add-anywhere")),
    ] {
        let (messages, routed) = r.route(vec![request("1", "tools/call", tool(name))]);
        assert_eq!(routed.server.as_deref(), Some(server));
        assert_eq!(messages[0].target, Target::Tool(Cow::Owned(name.split_once("__").unwrap().1.to_string())));
        let subject = Subject { identity: Some(&who), server };
        let mut j = judge(&messages, Some(&p), subject, false);
        routed.rule(&mut j, false);
        assert_eq!(j.records[0].decision == Decision::Allow, allowed, "{name}");
        assert_eq!(j.records[0].rule_id.as_deref(), rule, "{name}");
        assert_eq!(j.records[0].detail.tool.as_deref(), name.split_once("__").map(|(_, t)| t));
        assert_eq!(j.records[0].detail.routed_as.as_deref(), Some(name));
        let messages = routed.restore(messages);
        assert_eq!(messages[0].target, tool(name));
    }
}

#[test]
fn an_unknown_prefix_is_denied_whatever_the_policy_says() {
    let r = router();
    let who = alice();
    let (messages, routed) = r.route(vec![request("1", "tools/call", tool("gamma__add")), request("2", "tools/list", Target::None)]);
    assert_eq!(routed.server, None);
    let subject = Subject { identity: Some(&who), server: "tools" };
    // Without a policy everything passes; the router still cannot send it anywhere.
    let mut j = judge(&messages, None, subject, false);
    routed.rule(&mut j, false);
    assert_eq!(j.rulings, vec![Ruling::Denied { rule_id: None }, Ruling::Pass]);
    assert_eq!(j.records[0].detail.reason.as_deref(), Some(UNKNOWN_PREFIX));
    assert!(j.records[0].enforced);
    assert_eq!(j.records[0].detail.tool.as_deref(), Some("gamma__add"));
    assert_eq!(j.records[0].detail.routed_as, None);
    // Dry run: recorded, not enforced.
    let mut j = judge(&messages, None, subject, false);
    routed.rule(&mut j, true);
    assert!(!j.records[0].enforced);
    assert_eq!(j.records[0].label(), "dryrun_deny");
}

#[test]
fn a_batch_naming_two_backends_is_refused_for_the_second() {
    let r = router();
    let (messages, routed) = r.route(vec![
        request("1", "tools/call", tool("alpha__add")),
        request("2", "tools/call", tool("alpha__echo")),
        request("3", "tools/call", tool("beta__add")),
    ]);
    assert_eq!(routed.server.as_deref(), Some("alpha"));
    let mut j = judge(&messages, None, Subject { identity: None, server: "alpha" }, false);
    routed.rule(&mut j, false);
    assert_eq!(j.rulings[..2], [Ruling::Pass, Ruling::Pass]);
    assert_eq!(j.rulings[2], Ruling::Denied { rule_id: None });
    assert_eq!(j.records[2].detail.reason.as_deref(), Some(MIXED_SERVERS));
    let messages = routed.restore(messages);
    assert_eq!(messages[2].target, tool("beta__add"));
    assert_eq!(messages[1].target, tool("alpha__echo"));
}

#[test]
fn list_items_are_judged_per_backend_and_unprefixed_items_hidden() {
    let r = router();
    let p = policy();
    let who = alice();
    let subject = Subject { identity: Some(&who), server: "tools" };
    let shown = |method: &str, target: Target<'_>| r.visible(&p, subject, method, &target);
    assert!(shown("tools/call", tool("alpha__delete_row")));
    assert!(!shown("tools/call", tool("beta__delete_row")));
    assert!(shown("tools/call", tool("beta__add")));
    assert!(!shown("tools/call", tool("add")));
    assert!(!shown("tools/call", tool("gamma__add")));
    assert!(shown("prompts/get", Target::Prompt(Cow::Borrowed("alpha__greeting"))));
    assert!(!shown("prompts/get", Target::Prompt(Cow::Borrowed("beta__greeting"))));
    assert!(shown("resources/read", Target::Resource(Cow::Borrowed("alpha+file:///data/a"))));
    assert!(!shown("resources/read", Target::Resource(Cow::Borrowed("beta+file:///data/a"))));
    assert!(!shown("resources/read", Target::Resource(Cow::Borrowed("file:///data/a"))));
}

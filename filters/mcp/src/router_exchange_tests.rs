//! The router hooks of the exchange, run against `MemoryHost`: a route whose server is
//! `tools` (cluster `mcp_router` mapped to it) is Envoy's mcp_router with backends `alpha`
//! and `beta`.

use crate::config::Config;
use crate::exchange::{Exchange, Shared};
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::MemoryHost;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::testing::callback;

const ALICE: &str = "tg-demo-alice";

fn shared(rate_limits: Value, dry_run: bool) -> Rc<Shared> {
    let cfg = json!({
        "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
            {"sha256": sha256_hex(ALICE.as_bytes()), "name": "alice-key", "principal": "alice", "groups": ["eng"]}]}},
        "server": {"clusters": {"mcp_router": "tools", "mcp_plain": "plain"},
                   "routers": {"tools": {"servers": ["alpha", "beta"]}}},
        "policy": {"dry_run": dry_run, "rules": [
            {"id": "protocol", "effect": "allow", "methods": ["initialize", "tools/list"]},
            {"id": "add", "effect": "allow", "principals": ["*"], "tools": ["add"]},
            {"id": "delete-on-alpha", "effect": "allow", "principals": ["*"], "servers": ["alpha"], "tools": ["delete_row"]},
        ]},
        "rate_limits": rate_limits,
    });
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    Rc::new(Shared::build(config).unwrap())
}

const HEADERS: [(&str, &str); 3] = [(":method", "POST"), ("content-type", "application/json"), ("x-api-key", ALICE)];

fn host_headers() -> Vec<(String, String)> {
    HEADERS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn host(cluster: &str) -> MemoryHost {
    let host = MemoryHost::with_request_headers(&HEADERS);
    host.set_prop(&["xds", "cluster_name"], cluster.as_bytes());
    host
}

fn post(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
    // The filter removed the credential from the last request's headers.
    *host.request_headers.borrow_mut() = host_headers();
    *host.local_reply.borrow_mut() = None;
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    assert_eq!(callback(host, |h| ex.on_request_headers(h, false)), Step::Pause);
    *host.request_body.borrow_mut() = body.as_bytes().to_vec();
    let step = callback(host, |h| ex.on_request_body(h, body.len(), true));
    (ex, step)
}

fn call(id: u32, name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {"a": 1, "b": 2}}}).to_string()
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
}

fn reply(host: &MemoryHost) -> (u32, Value) {
    let (status, _, body) = host.local_reply.borrow().clone().expect("a local reply");
    (status, serde_json::from_slice(&body).unwrap())
}

fn respond(ex: &mut Exchange, host: &MemoryHost, body: &[u8]) -> Vec<u8> {
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    assert_eq!(ex.on_response_headers(host, false), Step::Continue);
    host.response_body.borrow_mut().extend_from_slice(body);
    let size = host.response_body.borrow().len();
    assert_eq!(ex.on_response_body(host, size, true), Step::Continue);
    std::mem::take(&mut *host.response_body.borrow_mut())
}

#[test]
fn a_prefixed_call_is_judged_recorded_and_counted_on_its_backend() {
    let shared = shared(json!([]), false);
    let h = host("mcp_router");
    let (mut ex, step) = post(&shared, &h, &call(1, "alpha__delete_row"));
    assert_eq!(step, Step::Continue);
    // The body goes to the router as the client sent it: the router strips the prefix.
    assert_eq!(h.request_body.borrow().as_slice(), call(1, "alpha__delete_row").as_bytes());
    respond(&mut ex, &h, br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#);
    let a = audit(&h);
    assert_eq!((a["server"].as_str(), a["tool"].as_str(), a["routed_as"].as_str()), (Some("alpha"), Some("delete_row"), Some("alpha__delete_row")));
    assert_eq!((a["decision"].as_str(), a["rule_id"].as_str(), a["is_error"].as_bool()), (Some("allow"), Some("delete-on-alpha"), Some(false)));
    assert_eq!(h.metric("tollgate.mcp.calls.server.alpha.tool.delete_row.caller.alice.decision.allow"), Some(1));
}

#[test]
fn the_same_tool_on_another_backend_is_denied_under_the_name_sent() {
    let shared = shared(json!([]), false);
    let h = host("mcp_router");
    let (_, step) = post(&shared, &h, &call(2, "beta__delete_row"));
    assert_eq!(step, Step::Pause);
    assert_eq!(reply(&h), (200, json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "Unknown tool: beta__delete_row"}})));
    let a = audit(&h);
    assert_eq!((a["server"].as_str(), a["tool"].as_str(), a["decision"].as_str(), a["reason"].as_str()), (Some("beta"), Some("delete_row"), Some("deny"), Some("no rule allows")));
    assert_eq!(h.metric("tollgate.mcp.calls.server.beta.tool.delete_row.caller.alice.decision.deny"), Some(1));
}

#[test]
fn an_unknown_prefix_is_refused_and_in_dry_run_only_recorded() {
    let h = host("mcp_router");
    let (_, step) = post(&shared(json!([]), false), &h, &call(3, "gamma__add"));
    assert_eq!(step, Step::Pause);
    assert_eq!(reply(&h).1["error"]["message"], "Unknown tool: gamma__add");
    let a = audit(&h);
    assert_eq!((a["server"].as_str(), a["decision"].as_str(), a["reason"].as_str()), (Some("tools"), Some("deny"), Some("names no server behind the router")));
    assert_eq!(a["rule_id"], Value::Null);

    let h = host("mcp_router");
    let (mut ex, step) = post(&shared(json!([]), true), &h, &call(3, "gamma__add"));
    assert_eq!(step, Step::Continue);
    ex.on_log(&h);
    let a = audit(&h);
    assert_eq!((a["decision"].as_str(), a["enforced"].as_bool()), (Some("deny"), Some(false)));
}

#[test]
fn routes_that_are_not_the_router_keep_their_names() {
    let shared = shared(json!([]), false);
    let h = host("mcp_plain");
    let (_, step) = post(&shared, &h, &call(4, "add"));
    assert_eq!(step, Step::Continue);
    let (_, step) = post(&shared, &h, &call(5, "alpha__add"));
    assert_eq!(step, Step::Pause, "no router on this route: `alpha__add` is just an unknown tool");
    assert_eq!(audit(&h)["server"], "plain");
}

#[test]
fn rate_limits_count_per_backend() {
    let limits = json!([{"id": "beta-calls", "servers": ["beta"], "tools": ["add"], "max_calls": 1, "window_secs": 60, "per": "server"}]);
    let shared = shared(limits, false);
    let h = host("mcp_router");
    *h.clock_nanos.borrow_mut() = 6_000_000 * 1_000_000_000;
    assert_eq!(post(&shared, &h, &call(1, "beta__add")).1, Step::Continue);
    assert_eq!(post(&shared, &h, &call(2, "alpha__add")).1, Step::Continue);
    assert_eq!(post(&shared, &h, &call(3, "beta__add")).1, Step::Pause);
    assert_eq!(reply(&h).0, 429);
    assert_eq!(audit(&h)["rule_id"], "beta-calls");
    assert_eq!(post(&shared, &h, &call(4, "alpha__add")).1, Step::Continue);
}

#[test]
fn the_aggregated_list_is_filtered_per_backend() {
    let shared = shared(json!([]), false);
    let h = host("mcp_router");
    let (mut ex, step) = post(&shared, &h, r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#);
    assert_eq!(step, Step::Continue);
    let list = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"beta__add"},{"name":"beta__delete_row"},{"name":"alpha__add"},{"name":"alpha__delete_row"},{"name":"add"},{"name":"gamma__add"}]}}"#;
    let out: Value = serde_json::from_slice(&respond(&mut ex, &h, list)).unwrap();
    let names: Vec<&str> = out["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["beta__add", "alpha__add", "alpha__delete_row"]);
    let a = audit(&h);
    assert_eq!((a["server"].as_str(), a["list_hidden"].as_u64()), (Some("tools"), Some(3)));
}

#[test]
fn tool_pinning_behind_the_router_is_refused_at_load_naming_the_field() {
    let cfg = json!({
        "server": {"routers": {"tools": {"servers": ["alpha", "beta"]}}},
        "tool_pinning": {},
    });
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    let err = Shared::build(config).err().expect("refused").to_string();
    assert!(err.contains("tool_pinning") && err.contains("server.routers"), "{err}");
}

//! Agents and on-behalf-of principals in rules, and whole exchanges with a gateway
//! credential: accepted (the record names agent, on-behalf-of and chain), refused when
//! expired, replayed on another trace or forged.

use super::*;
use tollgate_core::glob::Glob;
use crate::config::Config;
use crate::exchange::{Exchange, Shared};
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::gateway::{self, Credential, HmacKey};
use tollgate_core::host::{HostExt, MemoryHost};
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::testing::callback;

const KEY: &str = "0123456789abcdef0123456789abcdef-test";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const NOW: u64 = 1_700_000_000;

fn credential(agent: &str, on_behalf_of: &str, expiry: u64) -> String {
    gateway::sign(&HmacKey::new(KEY.as_bytes()).unwrap(), &Credential {
        expiry,
        trace_id: TRACE.into(),
        agent: agent.into(),
        on_behalf_of: Some(on_behalf_of.into()),
        team: Some("analytics".into()),
        tier: Some("gold".into()),
        chain: vec!["planner".into(), agent.into()],
    })
}

fn shared() -> Rc<Shared> {
    let cfg = json!({
        "identity": {"gateway": {"signing_key": KEY}},
        "server": {"clusters": {"mcp_demo": "demo"}},
        "policy": {"rules": [
            {"id": "protocol", "effect": "allow", "principals": ["*"], "methods": ["initialize", "tools/list", "notifications/*"]},
            {"id": "researcher-for-analysts", "effect": "allow", "agents": ["researcher"], "on_behalf_of": ["alice", "ann-*"], "tools": ["query_db"]},
        ]},
    });
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    Rc::new(Shared::build(config).unwrap())
}

fn call(shared: &Rc<Shared>, credential: Option<&str>, trace: &str) -> MemoryHost {
    call_on(shared, credential, trace, None)
}

/// A tools/call through the filter, on a fresh host or on the shared data `prev` left.
fn call_on(shared: &Rc<Shared>, credential: Option<&str>, trace: &str, prev: Option<&MemoryHost>) -> MemoryHost {
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let mut headers = vec![(":method", "POST"), ("content-type", "application/json"), ("traceparent", traceparent.as_str())];
    if let Some(c) = credential {
        headers.push((gateway::HEADER, c));
    }
    let host = MemoryHost::with_request_headers(&headers);
    if let Some(prev) = prev {
        *host.shared.borrow_mut() = prev.shared.borrow().clone();
    }
    host.set_prop(&["xds", "cluster_name"], b"mcp_demo");
    *host.clock_nanos.borrow_mut() = NOW * 1_000_000_000;
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"orders"}}}"#;
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    if callback(&host, |h| ex.on_request_headers(h, false)) == Step::Pause && host.local_reply.borrow().is_none() {
        *host.request_body.borrow_mut() = body.as_bytes().to_vec();
        callback(&host, |h| ex.on_request_body(h, body.len(), true));
    }
    if host.local_reply.borrow().is_none() {
        *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
        ex.on_response_headers(&host, false);
        *host.response_body.borrow_mut() = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#.to_vec();
        ex.on_response_body(&host, 45, true);
    }
    host
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
}

/// Status, headers and JSON body of the filter's own answer.
type Answer = (u32, Vec<(String, String)>, Value);

fn reply(host: &MemoryHost) -> Option<Answer> {
    host.local_reply.borrow().clone().map(|(s, h, b)| (s, h, serde_json::from_slice(&b).unwrap()))
}

#[test]
fn the_researcher_may_query_for_alice() {
    let shared = shared();
    let host = call(&shared, Some(&credential("researcher", "alice", NOW + 60)), TRACE);
    assert!(reply(&host).is_none());
    // The credential never reaches the server.
    assert_eq!(host.request_header(gateway::HEADER), None);
    let a = audit(&host);
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["rule_id"], "researcher-for-analysts");
    assert_eq!((a["agent"].as_str(), a["on_behalf_of"].as_str()), (Some("researcher"), Some("alice")));
    assert_eq!(a["chain"], json!(["planner", "researcher"]));
    assert_eq!(a["identity"]["principal"], "researcher");
    assert_eq!(a["identity"]["source"], "gateway");
    assert_eq!(a["identity"]["team"], "analytics");
    assert_eq!(a["identity"]["tier"], "gold");
    assert_eq!(a["trace_id"], TRACE);
    assert_eq!(host.metric("tollgate.mcp.gateway_credentials.result.accepted"), Some(1));
}

#[test]
fn not_for_bob_nor_for_another_agent_nor_without_a_credential() {
    let shared = shared();
    for c in [Some(credential("researcher", "bob", NOW + 60)), Some(credential("planner", "alice", NOW + 60)), None] {
        let host = call(&shared, c.as_deref(), TRACE);
        let a = audit(&host);
        assert_eq!(a["decision"], "deny", "{c:?}");
        assert_eq!(a["rule_id"], Value::Null);
        let (status, _, body) = reply(&host).unwrap();
        assert_eq!((status, body["id"].as_i64()), (200, Some(7)), "a policy denial is a JSON-RPC answer");
    }
}

#[test]
fn expired_replayed_or_forged_credentials_are_refused_with_401() {
    let shared = shared();
    let other = "0af7651916cd43dd8448eb211c80319c";
    let cases = [
        (credential("researcher", "alice", NOW), TRACE, "expired", "gateway credential expired"),
        (credential("researcher", "alice", NOW + 60), other, "other_trace", "gateway credential replayed on another trace"),
        (credential("researcher", "alice", NOW + 60).replace("obo=alice", "obo=ann-1"), TRACE, "bad_signature", "gateway credential signature invalid"),
        ("v1;agent=researcher".to_string(), TRACE, "malformed", "gateway credential malformed"),
    ];
    for (value, trace, label, reason) in cases {
        let host = call(&shared, Some(&value), trace);
        let (status, headers, body) = reply(&host).expect("refused");
        assert_eq!(status, 401, "{label}");
        assert!(headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains("invalid_token")), "{headers:?}");
        assert_eq!(body["error"]["code"], crate::message::codes::UNAUTHORIZED);
        assert_eq!(body["error"]["data"]["reason"], label);
        let a = audit(&host);
        assert_eq!(a["decision"], "deny");
        assert_eq!(a["error"], reason);
        assert!(a["identity"].is_null(), "never a fallback to anonymous: {a}");
        assert_eq!(host.metric(&format!("tollgate.mcp.gateway_credentials.result.{label}")), Some(1));
        assert!(host.request_body.borrow().is_empty() || host.local_reply.borrow().is_some());
    }
}

#[test]
fn agent_conditions_without_the_gateway_source_are_refused_at_load() {
    let cfg = json!({"policy": {"rules": [{"id": "a", "effect": "allow"}, {"id": "b", "effect": "allow", "on_behalf_of": ["alice"]}]}});
    let err = tollgate_core::config::load::<Config>(cfg.to_string().as_bytes()).err().unwrap();
    assert!(err.0.starts_with("policy.rules[1].on_behalf_of: needs identity.gateway"), "{err}");
    let cfg = json!({"identity": {"gateway": {"signing_key": "short"}}});
    let err = tollgate_core::config::load::<Config>(cfg.to_string().as_bytes()).err().unwrap();
    assert!(err.0.starts_with("identity.gateway.signing_key: must be at least 32 bytes"), "{err}");
    let cfg = json!({"identity": {"gateway": {"signing_key": KEY, "ttl": 5}}});
    let err = tollgate_core::config::load::<Config>(cfg.to_string().as_bytes()).err().unwrap();
    assert!(err.0.starts_with("identity.gateway"), "{err}");
}

#[test]
fn rule_conditions_need_a_delegated_identity() {
    let globs = |v: &[&str]| Some(v.iter().map(|s| serde_json::from_value::<Glob>(json!(s)).unwrap()).collect::<Vec<_>>());
    let m = DelegationSelectors { agents: globs(&["research*"]), on_behalf_of: globs(&["alice"]) };
    let key = HmacKey::new(KEY.as_bytes()).unwrap();
    let id = |agent: &str, obo: &str| {
        let c = gateway::verify(&key, &credential(agent, obo, NOW + 1), NOW).unwrap();
        tollgate_core::identity::from_credential(c)
    };
    assert!(m.matches(Some(&id("researcher", "alice"))));
    assert!(!m.matches(Some(&id("researcher", "bob"))));
    assert!(!m.matches(Some(&id("planner", "alice"))));
    let mut plain = id("researcher", "alice");
    plain.delegation = None;
    assert!(!m.matches(Some(&plain)));
    assert!(DelegationSelectors::default().is_empty() && DelegationSelectors::default().matches(Some(&plain)));
}

#[test]
fn without_the_gateway_source_the_credential_still_never_reaches_the_server() {
    let cfg = json!({"server": {"clusters": {"mcp_demo": "demo"}}});
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    let shared = Rc::new(Shared::build(config).unwrap());
    let host = call(&shared, Some(&credential("researcher", "alice", NOW + 60)), TRACE);
    assert!(reply(&host).is_none());
    assert_eq!(host.request_header(gateway::HEADER), None);
    assert!(audit(&host)["identity"].is_null(), "not an identity source here");
}

#[test]
fn rate_limits_select_agents_and_on_behalf_of() {
    let cfg = json!({
        "identity": {"gateway": {"signing_key": KEY}},
        "server": {"clusters": {"mcp_demo": "demo"}},
        "policy": {"rules": [{"id": "any-agent", "effect": "allow", "agents": ["*"], "tools": ["query_db"]}]},
        "rate_limits": [{"id": "researcher-for-bob", "agents": ["researcher"], "on_behalf_of": ["bob"],
                         "max_calls": 1, "window_secs": 60, "per": "principal", "counters": "local"}],
    });
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    let shared = Rc::new(Shared::build(config).unwrap());
    let first = call(&shared, Some(&credential("researcher", "bob", NOW + 60)), TRACE);
    assert_eq!(audit(&first)["decision"], "allow");
    // The limit counts the researcher's calls for bob only: alice's pass, bob's second does not.
    let for_alice = call_after(&shared, &first, &credential("researcher", "alice", NOW + 60));
    assert_eq!(audit(&for_alice)["decision"], "allow");
    let again = call_after(&shared, &for_alice, &credential("researcher", "bob", NOW + 60));
    let a = audit(&again);
    assert_eq!((a["decision"].as_str(), a["rule_id"].as_str(), a["reason"].as_str()), (Some("deny"), Some("researcher-for-bob"), Some("rate_limited")));
    assert_eq!(reply(&again).map(|(status, _, _)| status), Some(429));
}

/// [`call`] on the shared data `prev` left.
fn call_after(shared: &Rc<Shared>, prev: &MemoryHost, credential: &str) -> MemoryHost {
    call_on(shared, Some(credential), TRACE, Some(prev))
}

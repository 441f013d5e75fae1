//! Limits selected and counted by the gateway identity, and whole exchanges with a gateway
//! credential (recorded; refused when expired, replayed on another trace or forged).

use super::*;
use crate::config::{load_with, State};
use crate::exchange::Exchange;
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::gateway::{self, Credential, HmacKey};
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::{HostExt, MemoryHost};
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::shared_data::window::Window;
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::testing::callback;

const KEY: &str = "0123456789abcdef0123456789abcdef-test";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const NOW: u64 = 1_700_000_000;

fn credential(agent: &str, on_behalf_of: &str, team: &str, expiry: u64) -> String {
    gateway::sign(&HmacKey::new(KEY.as_bytes()).unwrap(), &Credential {
        expiry,
        trace_id: TRACE.into(),
        agent: agent.into(),
        on_behalf_of: Some(on_behalf_of.into()),
        team: Some(team.into()),
        tier: None,
        chain: vec!["planner".into(), agent.into()],
    })
}

fn state(limits: Value) -> Rc<State> {
    let cfg = json!({
        "identity": {"gateway": {"signing_key": KEY},
                     "api_keys": {"keys": [{"sha256": sha256_hex(b"tg-agent"), "name": "agent-key", "principal": "svc"}]}},
        "providers": [{"name": "prov-a", "credential": {"value": "sk-a"}}],
        "models": [{"model": "gpt-*", "provider": "prov-a"}],
        "limits": limits,
    });
    Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap())
}

/// One chat completion up to admission; the host (request side done).
fn chat(state: &Rc<State>, shared: &MemoryHost, credential: Option<&str>, trace: &str) -> MemoryHost {
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let mut headers = vec![(":method", "POST"), (":path", "/v1/chat/completions"), ("authorization", "Bearer tg-agent"), ("traceparent", tp.as_str())];
    if let Some(c) = credential {
        headers.push((gateway::HEADER, c));
    }
    let host = MemoryHost::with_request_headers(&headers);
    *host.shared.borrow_mut() = shared.shared.borrow().clone();
    *host.clock_nanos.borrow_mut() = NOW * 1_000_000_000;
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#;
    let mut ex = Exchange::new(state.clone(), Rc::new(Metrics::new()));
    if callback(&host, |h| ex.on_request_headers(h, false)) == Step::Pause && host.local_reply.borrow().is_none() {
        *host.request_body.borrow_mut() = body.to_vec();
        callback(&host, |h| ex.on_request_body(h, body.len(), true));
    }
    ex.on_log(&host);
    *shared.shared.borrow_mut() = host.shared.borrow().clone();
    host
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("audit record")).unwrap()
}

fn requests(host: &MemoryHost, key: &str) -> u64 {
    tollgate_core::shared_data::window_counter::usage(host, key, Window::fixed(3600))
}

#[test]
fn the_agent_is_the_caller_and_counted_per_agent_for_alice_only() {
    let state = state(json!([
        {"id": "per-agent", "scope": "agent", "requests_per_window": 100, "window_secs": 3600},
        {"id": "researcher-for-alice", "scope": "team", "agents": ["research*"], "on_behalf_of": ["alice"], "requests_per_window": 100, "window_secs": 3600},
    ]));
    let shared = MemoryHost::new();
    *shared.clock_nanos.borrow_mut() = NOW * 1_000_000_000;
    let host = chat(&state, &shared, Some(&credential("researcher", "alice", "analytics", NOW + 60)), TRACE);
    assert!(host.local_reply.borrow().is_none(), "forwarded");
    assert_eq!(host.request_header(gateway::HEADER), None, "the credential never reaches the provider");
    let r = audit(&host);
    assert_eq!((r["agent"].as_str(), r["on_behalf_of"].as_str()), (Some("researcher"), Some("alice")));
    assert_eq!(r["chain"], json!(["planner", "researcher"]));
    assert_eq!((r["identity"]["principal"].as_str(), r["identity"]["source"].as_str()), (Some("researcher"), Some("gateway")));
    assert_eq!(r["trace_id"], TRACE);
    // Bob's call through the same agent: counted per agent, not by the alice-only budget.
    chat(&state, &shared, Some(&credential("researcher", "bob", "sales", NOW + 60)), TRACE);
    // Without a credential (the API key alone): neither.
    chat(&state, &shared, None, TRACE);
    assert_eq!(requests(&shared, "tollgate.llm.limit.per-agent.researcher.requests"), 2);
    assert_eq!(requests(&shared, "tollgate.llm.limit.per-agent.~none.requests"), 1);
    assert_eq!(requests(&shared, "tollgate.llm.limit.researcher-for-alice.analytics.requests"), 1);
    assert_eq!(requests(&shared, "tollgate.llm.limit.researcher-for-alice.sales.requests"), 0);
}

#[test]
fn refused_credentials_are_401_in_the_openai_shape() {
    let state = state(json!([]));
    let shared = MemoryHost::new();
    let other = "0af7651916cd43dd8448eb211c80319c";
    for (value, trace, reason) in [
        (credential("researcher", "alice", "analytics", NOW), TRACE, "gateway credential expired"),
        (credential("researcher", "alice", "analytics", NOW + 60), other, "gateway credential replayed on another trace"),
        (credential("researcher", "alice", "analytics", NOW + 60).replace("obo=alice", "obo=root"), TRACE, "gateway credential signature invalid"),
    ] {
        let host = chat(&state, &shared, Some(&value), trace);
        let (status, _, body) = host.local_reply.borrow().clone().expect("refused");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 401, "{reason}");
        assert_eq!(body["error"]["message"], reason);
        let r = audit(&host);
        assert_eq!((r["decision"].as_str(), r["error_type"].as_str()), (Some("deny"), Some("invalid_gateway_credential")), "{r}");
        assert!(r["identity"].is_null(), "never the API key instead: {r}");
    }
}

#[test]
fn selectors_need_the_gateway_source_and_non_empty_lists() {
    let load = |identity: Value, limit: Value| {
        let cfg = json!({"identity": identity, "providers": [{"name": "p"}], "models": [{"model": "*", "provider": "p"}], "limits": [limit]});
        load_with(cfg.to_string().as_bytes(), &|_| None).err().map(|e| e.0)
    };
    let gw = json!({"gateway": {"signing_key": KEY}});
    let keys = json!({"api_keys": {"keys": []}});
    let limit = |extra: Value| {
        let mut l = json!({"id": "l", "scope": "team", "requests_per_window": 1, "window_secs": 60});
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        l
    };
    assert_eq!(load(gw.clone(), limit(json!({"agents": ["r*"], "on_behalf_of": ["alice"]}))), None);
    assert_eq!(load(gw.clone(), limit(json!({"scope": "agent"}))), None);
    let e = load(keys.clone(), limit(json!({"agents": ["r*"]}))).unwrap();
    assert!(e.starts_with("limits[0].agents: needs identity.gateway"), "{e}");
    let e = load(keys, limit(json!({"scope": "agent"}))).unwrap();
    assert!(e.starts_with("limits[0].scope: `agent` needs identity.gateway"), "{e}");
    let e = load(gw, limit(json!({"on_behalf_of": []}))).unwrap();
    assert!(e.starts_with("limits[0].on_behalf_of: must be"), "{e}");
}

#[test]
fn selectors_without_a_delegated_identity_never_match() {
    let s = Selectors::new(Some(&["researcher".to_string()]), None);
    assert!(!s.matches(None));
    let c = gateway::verify(&HmacKey::new(KEY.as_bytes()).unwrap(), &credential("researcher", "alice", "t", NOW + 1), NOW).unwrap();
    let mut id = tollgate_core::identity::from_credential(c);
    assert!(s.matches(Some(&id)));
    id.delegation = None;
    assert!(!s.matches(Some(&id)));
    assert!(Selectors::default().matches(None));
}

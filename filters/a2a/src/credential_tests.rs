//! The gateway credential issued with forwarded calls: pure issuing, and whole exchanges
//! (a two-hop chain through `MemoryHost`) checking what each agent receives.

use super::*;
use crate::exchange::Exchange;
use crate::config::Config;
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::MemoryHost;
use tollgate_core::identity::{Identity, Source};
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::host::HostExt;
use tollgate_core::stream::HttpExchange;
use tollgate_core::testing::callback;
use tollgate_core::wire::trace::TraceStep;

const KEY: &str = "0123456789abcdef0123456789abcdef-test";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn facts(trust: Trust, caller: &str, chain: &[&str]) -> ExchangeFacts {
    ExchangeFacts {
        trust,
        caller: caller.into(),
        chain: chain.iter().map(|s| s.to_string()).collect(),
        on_behalf_of: Some("alice".into()),
        trace: Some(TraceStep {
            trace_id: TRACE.into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: None,
            traceparent: format!("00-{TRACE}-00f067aa0ba902b7-01"),
            tracestate: None,
            started: false,
        }),
        identity: Some(Identity {
            principal: "alice".into(),
            team: Some("analytics".into()),
            groups: vec![],
            source: Source::Jwt,
            key_name: None,
            allowed_models: None,
            delegation: None,
        }),
        ..ExchangeFacts::default()
    }
}

#[test]
fn first_hop_carries_the_users_team_and_tier() {
    let carried = Carried { presented: None, tier: Some("gold".into()) };
    let c = issue(&facts(Trust::None, "alice", &["planner"]), &carried, 99).unwrap();
    assert_eq!(c, Credential {
        expiry: 99,
        trace_id: TRACE.into(),
        agent: "planner".into(),
        on_behalf_of: Some("alice".into()),
        team: Some("analytics".into()),
        tier: Some("gold".into()),
        chain: vec!["planner".into()],
    });
}

#[test]
fn later_hops_carry_the_presented_credentials_team_only_from_its_agent() {
    let presented = Credential { agent: "planner".into(), team: Some("analytics".into()), tier: Some("gold".into()), ..Default::default() };
    let carried = Carried { presented: Some(presented), tier: Some("ignored".into()) };
    let mut f = facts(Trust::Signature, "planner", &["planner", "researcher"]);
    f.identity = None;
    let c = issue(&f, &carried, 99).unwrap();
    assert_eq!((c.agent.as_str(), c.team.as_deref(), c.tier.as_deref()), ("researcher", Some("analytics"), Some("gold")));
    // Presented by another agent than the one it was issued to: not carried.
    let f = ExchangeFacts { caller: "intruder".into(), ..f };
    let c = issue(&f, &carried, 99).unwrap();
    assert_eq!((c.team, c.tier), (None, None));
    // No trace or no chain: nothing issued.
    assert!(issue(&ExchangeFacts { trace: None, ..facts(Trust::None, "alice", &["p"]) }, &carried, 9).is_none());
    assert!(issue(&facts(Trust::None, "alice", &[]), &carried, 9).is_none());
}

fn state(config: Value) -> Rc<crate::config::State> {
    let config: Config = tollgate_core::config::load(config.to_string().as_bytes()).unwrap();
    Rc::new(config.compile().unwrap())
}

/// One forwarded SendMessage to `agent` with `headers`; the headers the agent received.
fn hop(state: &Rc<crate::config::State>, agent: &str, headers: &[(String, String)]) -> MemoryHost {
    hop_with(state, agent, headers, |_| {})
}

/// [`hop`], with `prepare` setting host facts (e.g. JWT claims) first.
fn hop_with(state: &Rc<crate::config::State>, agent: &str, headers: &[(String, String)], prepare: impl Fn(&MemoryHost)) -> MemoryHost {
    let mut all: Vec<(&str, &str)> = vec![(":method", "POST"), (":path", "/"), (":authority", "gw"), ("content-type", "application/json"), ("a2a-version", "1.0")];
    all.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let host = MemoryHost::with_request_headers(&all);
    *host.clock_nanos.borrow_mut() = 1_700_000_000_000_000_000;
    host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "agent"], agent.as_bytes());
    prepare(&host);
    let body = json!({"jsonrpc": "2.0", "id": "r1", "method": "SendMessage",
        "params": {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}}).to_string();
    let mut ex = Exchange::new(state.clone(), Rc::new(Metrics::new()));
    callback(&host, |h| ex.on_request_headers(h, false));
    *host.request_body.borrow_mut() = body.clone().into_bytes();
    callback(&host, |h| ex.on_request_body(h, body.len(), true));
    assert!(host.local_reply.borrow().is_none());
    host
}

/// What an agent forwards on its own calls: traceparent and every x-tollgate-* header.
fn forwarded(host: &MemoryHost) -> Vec<(String, String)> {
    host.request_headers.borrow().iter().filter(|(k, _)| k == "traceparent" || k.starts_with("x-tollgate-")).cloned().collect()
}

#[test]
fn each_agent_of_a_chain_gets_a_credential_for_itself() {
    let s = state(json!({
        "identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"k-alice"), "name": "a", "principal": "alice", "team": "analytics"}]}},
        "delegation": {"signing_key": KEY, "context_ttl_secs": 60}}));
    let key = tollgate_core::gateway::HmacKey::new(KEY.as_bytes()).unwrap();
    let now = 1_700_000_000;
    let start = vec![("authorization".to_string(), "Bearer k-alice".to_string()),
                     ("traceparent".to_string(), format!("00-{TRACE}-00f067aa0ba902b7-01"))];
    let planner = hop(&s, "planner", &start);
    let value = planner.request_header(tollgate_core::gateway::HEADER).unwrap();
    let c = tollgate_core::gateway::verify(&key, &value, now).unwrap();
    assert_eq!((c.agent.as_str(), c.on_behalf_of.as_deref(), c.team.as_deref()), ("planner", Some("alice"), Some("analytics")));
    assert_eq!(c.trace_id, TRACE);
    assert_eq!(c.expiry, now + 60);
    // The planner delegates: the researcher's credential keeps alice and her team.
    let researcher = hop(&s, "researcher", &forwarded(&planner));
    let value = researcher.request_header(tollgate_core::gateway::HEADER).unwrap();
    let c = tollgate_core::gateway::verify(&key, &value, now).unwrap();
    assert_eq!(c.agent, "researcher");
    assert_eq!(c.chain, vec!["planner", "researcher"]);
    assert_eq!((c.on_behalf_of.as_deref(), c.team.as_deref()), (Some("alice"), Some("analytics")));
    // A caller's own credential header never reaches an agent.
    let forged = vec![(tollgate_core::gateway::HEADER.to_string(), "v1;exp=1;sig=00".to_string())];
    let plain = hop(&state(json!({})), "planner", &forged);
    assert_eq!(plain.request_header(tollgate_core::gateway::HEADER), None);
}

#[test]
fn the_users_tier_claim_is_signed_in_and_kept_down_the_chain() {
    let s = state(json!({
        "identity": {"jwt": {"payload_key": "payload", "team_claim": "team"}},
        "on_behalf_of": {"tier_claim": "plan.tier"},
        "delegation": {"signing_key": KEY}}));
    let key = tollgate_core::gateway::HmacKey::new(KEY.as_bytes()).unwrap();
    let now = 1_700_000_000;
    let claims = |host: &MemoryHost| {
        let base = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"];
        host.set_prop(&[&base[..], &["sub"]].concat(), b"alice");
        host.set_prop(&[&base[..], &["team"]].concat(), b"analytics");
        host.set_prop(&[&base[..], &["plan", "tier"]].concat(), b"gold");
    };
    let start = vec![("traceparent".to_string(), format!("00-{TRACE}-00f067aa0ba902b7-01"))];
    let planner = hop_with(&s, "planner", &start, claims);
    let c = tollgate_core::gateway::verify(&key, &planner.request_header(tollgate_core::gateway::HEADER).unwrap(), now).unwrap();
    assert_eq!((c.team.as_deref(), c.tier.as_deref(), c.on_behalf_of.as_deref()), (Some("analytics"), Some("gold"), Some("alice")));
    // The planner's next hop: no JWT of its own, the team and tier come from its credential.
    let researcher = hop(&s, "researcher", &forwarded(&planner));
    let c = tollgate_core::gateway::verify(&key, &researcher.request_header(tollgate_core::gateway::HEADER).unwrap(), now).unwrap();
    assert_eq!((c.agent.as_str(), c.team.as_deref(), c.tier.as_deref()), ("researcher", Some("analytics"), Some("gold")));
    // The same forwarded headers on another trace: the credential is not carried (no team, no tier).
    let mut replayed = forwarded(&planner);
    for (k, v) in replayed.iter_mut() {
        if k == "traceparent" {
            *v = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into();
        }
    }
    let other = hop(&s, "researcher", &replayed);
    let c = tollgate_core::gateway::verify(&key, &other.request_header(tollgate_core::gateway::HEADER).unwrap(), now).unwrap();
    assert_eq!((c.team, c.tier), (None, None));
}

#[test]
fn identity_gateway_is_refused_in_the_a2a_filter() {
    let err = tollgate_core::config::load::<Config>(json!({"identity": {"gateway": {"signing_key": KEY}}}).to_string().as_bytes())
        .err()
        .unwrap();
    assert!(err.0.starts_with("identity.gateway"), "{err}");
}

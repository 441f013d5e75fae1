//! Whole exchanges against `MemoryHost`: one Envoy's worth of state (`Gateway`), requests
//! and responses driven callback by callback.

use super::*;
use crate::config::{Config, State};
use crate::conversations::task_key;
use crate::replies::codes;
use crate::authz::ANONYMOUS;
use crate::chain;
use std::borrow::Cow;
use tollgate_core::wire::trace::TraceParent;
use serde_json::{json, Value};
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::MemoryHost;
use tollgate_core::testing::{callback, drive_ending, Ending};

const KEY: &str = "0123456789abcdef0123456789abcdef-test";

fn shared(config: Value) -> Rc<State> {
    let config: Config = tollgate_core::config::load(config.to_string().as_bytes()).unwrap();
    Rc::new(config.compile().unwrap())
}

/// One Envoy's worth of state: the shared-data table survives across requests.
struct Gateway {
    shared: Rc<State>,
    metrics: Rc<Metrics>,
    table: std::cell::RefCell<std::collections::BTreeMap<String, (Vec<u8>, u32)>>,
    clock: std::cell::Cell<u64>,
    /// Requests record no host calls (profiling warm-up).
    quiet: std::cell::Cell<bool>,
}

struct Call {
    host: MemoryHost,
    ex: Exchange,
    step: Step,
}

impl Call {
    fn upstream(&self, name: &str) -> Option<String> {
        self.host.request_header(name)
    }
    fn reply(&self) -> Option<(u32, Value)> {
        self.host.local_reply.borrow().clone().map(|(s, _, b)| (s, serde_json::from_slice(&b).unwrap()))
    }
}

impl Gateway {
    fn new(config: Value) -> Self {
        Gateway {
            shared: shared(config),
            metrics: Rc::new(Metrics::new()),
            table: Default::default(),
            clock: std::cell::Cell::new(1_700_000_000_000_000_000),
            quiet: std::cell::Cell::new(false),
        }
    }

    /// Runs the request side: headers (and body, when given) through the exchange.
    fn request(&self, agent: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Call {
        let mut all = vec![(":method", method), (":path", path), (":authority", "gw:10000"), (":scheme", "http")];
        if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            all.push(("content-type", "application/json"));
        }
        all.extend_from_slice(headers);
        let host = MemoryHost::with_request_headers(&all);
        host.quiet.set(self.quiet.get());
        *host.shared.borrow_mut() = self.table.borrow().clone();
        self.clock.set(self.clock.get() + 1_000_000_000);
        *host.clock_nanos.borrow_mut() = self.clock.get();
        host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "agent"], agent.as_bytes());
        let mut ex = Exchange::new(self.shared.clone(), self.metrics.clone());
        let mut step = callback(&host, |h| ex.on_request_headers(h, body.is_none()));
        if let (Some(body), Step::Pause) = (body, step) {
            if host.local_reply.borrow().is_none() {
                *host.request_body.borrow_mut() = body.to_vec();
                step = callback(&host, |h| ex.on_request_body(h, body.len(), true));
            }
        }
        *host.headers_sent.borrow_mut() = true;
        Call { host, ex, step }
    }

    /// Runs the response side with the body in `chunks`, then the log callback.
    fn respond(&self, call: &mut Call, content_type: &str, chunks: &[&[u8]]) -> Vec<Step> {
        *call.host.response_headers.borrow_mut() =
            vec![(":status".into(), "200".into()), ("content-type".into(), content_type.into())];
        let mut steps = vec![callback(&call.host, |h| call.ex.on_response_headers(h, chunks.is_empty()))];
        for (i, chunk) in chunks.iter().enumerate() {
            *call.host.response_body.borrow_mut() = chunk.to_vec();
            steps.push(callback(&call.host, |h| call.ex.on_response_body(h, chunk.len(), i + 1 == chunks.len())));
            *self.table.borrow_mut() = call.host.shared.borrow().clone();
        }
        self.finish(call);
        steps
    }

    fn finish(&self, call: &mut Call) {
        callback(&call.host, |h| call.ex.on_log(h));
        *self.table.borrow_mut() = call.host.shared.borrow().clone();
    }
}

fn audit(call: &Call) -> Value {
    serde_json::from_slice(&call.host.prop(&["tollgate.audit"]).expect("audit record")).unwrap()
}

fn send_body(method: &str, message: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": {"message": message}}).to_string().into_bytes()
}

fn v10_message(extra: Value) -> Value {
    let mut m = json!({"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "secret words"}]});
    m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    m
}

const V10: (&str, &str) = ("a2a-version", "1.0");

fn task_json(ctx: &str, task: &str, state: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "r1", "result": {"task": {"id": task, "contextId": ctx, "status": {"state": state}}}})
        .to_string()
        .into_bytes()
}

#[test]
fn send_message_is_tagged_and_the_next_turn_joins_the_trace() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut first = gw.request("agent-a", "POST", "/agents/a/", &[V10], Some(&body));
    assert_eq!(first.step, Step::Continue);
    let tp = TraceParent::parse(&first.upstream("traceparent").unwrap()).unwrap();
    assert_eq!(first.upstream("a2a-version").as_deref(), Some("1.0"), "never altered");
    assert_eq!(first.upstream(chain::HOP).as_deref(), Some("1"));
    assert_eq!(first.upstream(chain::CHAIN).as_deref(), Some("agent-a"));
    assert_eq!(first.upstream(chain::MESSAGE_ID).as_deref(), Some("m1"));
    let response = task_json("ctx-1", "task-1", "TASK_STATE_COMPLETED");
    let (a, b) = response.split_at(40);
    let steps = gw.respond(&mut first, "application/json", &[a, b]);
    assert!(steps.iter().all(|s| *s == Step::Continue), "JSON responses are never held");
    let rec = audit(&first);
    assert_eq!(rec["layer"], "a2a");
    assert_eq!(rec["method"], "SendMessage");
    assert_eq!(rec["dialect"], "1.0");
    assert_eq!(rec["context_id"], "ctx-1");
    assert_eq!(rec["task_id"], "task-1");
    assert_eq!(rec["task_state"], "completed");
    assert_eq!(rec["message_id"], "m1");
    assert_eq!(rec["trace_id"], tp.trace_id.as_str());
    assert_eq!(rec["span_id"], tp.parent_id.as_str(), "the gateway's span is the upstream's parent");
    assert!(rec.get("parent_span_id").is_none());
    assert_eq!(rec["trace_source"], "new");
    assert!(rec.get("message_parts").is_none(), "message content is not logged by default");
    assert!(!rec.to_string().contains("secret words"));
    assert_eq!(first.host.prop(&["tollgate.a2a.context_id"]).as_deref(), Some(&b"ctx-1"[..]));
    assert_eq!(gw.metrics_value(&first.host, "tollgate.a2a.calls.target.agent-a.method.SendMessage.state.completed"), Some(1));

    // Turn 2: same contextId, no traceparent.
    let body = send_body("SendMessage", v10_message(json!({"contextId": "ctx-1"})));
    let mut second = gw.request("agent-a", "POST", "/agents/a/", &[V10], Some(&body));
    let tp2 = TraceParent::parse(&second.upstream("traceparent").unwrap()).unwrap();
    assert_eq!(tp2.trace_id, tp.trace_id);
    assert_eq!(second.upstream(chain::CONTEXT_ID).as_deref(), Some("ctx-1"));
    gw.respond(&mut second, "application/json", &[&task_json("ctx-1", "task-2", "TASK_STATE_COMPLETED")]);
    let rec2 = audit(&second);
    assert_eq!(rec2["trace_id"], tp.trace_id.as_str());
    assert_eq!(rec2["parent_span_id"], tp.parent_id.as_str());
    assert_eq!(rec2["trace_source"], "conversation");
}

impl Gateway {
    fn metrics_value(&self, host: &MemoryHost, name: &str) -> Option<i64> {
        host.metric(name)
    }
}

#[test]
fn valid_inbound_traceparent_wins_and_invalid_is_replaced() {
    let gw = Gateway::new(json!({}));
    let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = send_body("message/send", json!({"kind": "message", "messageId": "m", "role": "user", "parts": []}));
    let mut call = gw.request("a", "POST", "/", &[("traceparent", inbound), ("tracestate", "v=1")], Some(&body));
    let out = call.upstream("traceparent").unwrap();
    assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"));
    assert!(!out.contains("00f067aa0ba902b7"));
    assert_eq!(call.upstream("tracestate").as_deref(), Some("v=1"));
    gw.finish(&mut call);
    let rec = audit(&call);
    assert_eq!(rec["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(rec["dialect"], "0.3");
    assert_eq!(rec["jsonrpc_method"], "message/send");
    let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let call = gw.request("a", "POST", "/", &[("traceparent", bad), ("tracestate", "v=1")], Some(&body));
    assert!(!call.upstream("traceparent").unwrap().contains("4bf92f35"));
    assert_eq!(call.upstream("tracestate"), None, "a new trace drops tracestate");
    // An invalid traceparent on a known conversation joins the conversation's trace.
    let mut first = gw.request("a", "POST", "/", &[V10], Some(&send_body("SendMessage", v10_message(json!({"contextId": "c-t"})))));
    gw.finish(&mut first);
    let trace_id = audit(&first)["trace_id"].clone();
    let again = send_body("SendMessage", v10_message(json!({"contextId": "c-t"})));
    let mut next = gw.request("a", "POST", "/", &[V10, ("traceparent", bad), ("tracestate", "v=1")], Some(&again));
    assert_eq!(next.upstream("tracestate"), None);
    gw.finish(&mut next);
    let rec = audit(&next);
    assert_eq!((rec["trace_id"].clone(), rec["trace_source"].as_str()), (trace_id, Some("conversation")));
}

/// Copies what the gateway sent upstream to an agent onto that agent's next call, as the
/// demo agent does (traceparent and x-tollgate-*).
fn forwarded(call: &Call) -> Vec<(String, String)> {
    call.host
        .request_headers
        .borrow()
        .iter()
        .filter(|(k, _)| k == "traceparent" || k.starts_with("x-tollgate-"))
        .cloned()
        .collect()
}

fn with(headers: &[(String, String)], extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let mut out = headers.to_vec();
    out.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn signed_chain_counts_hops_and_refuses_loops_and_depth() {
    let gw = Gateway::new(json!({"delegation": {"signing_key": KEY, "max_hops": 3}}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let hop1 = gw.request("agent-a", "POST", "/agents/a/", &[V10], Some(&body));
    assert!(hop1.upstream(chain::SIG).unwrap().starts_with("v1."));
    let h = with(&forwarded(&hop1), &[V10]);
    let mut hop2 = gw.request("agent-b", "POST", "/agents/b/", &refs(&h), Some(&body));
    assert_eq!(hop2.step, Step::Continue);
    assert_eq!(hop2.upstream(chain::HOP).as_deref(), Some("2"));
    assert_eq!(hop2.upstream(chain::CHAIN).as_deref(), Some("agent-a,agent-b"));
    assert_eq!(hop2.upstream(chain::CALLER).as_deref(), Some("agent-a"));
    gw.finish(&mut hop2);
    let rec2 = audit(&hop2);
    assert_eq!(rec2["caller"], "agent-a");
    assert_eq!(rec2["caller_trust"], "signature");
    assert_eq!(rec2["hop"], 2);
    assert_eq!(rec2["chain"], json!(["agent-a", "agent-b"]));

    // B calls A: a loop.
    let h = with(&forwarded(&hop2), &[V10]);
    let mut back = gw.request("agent-a", "POST", "/agents/a/", &refs(&h), Some(&body));
    assert_eq!(back.step, Step::Pause);
    let (status, reply) = back.reply().unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply["id"], "r1");
    assert_eq!(reply["error"]["code"], codes::DELEGATION_LOOP);
    assert_eq!(reply["error"]["data"][0]["reason"], "A2A_DELEGATION_LOOP");
    assert_eq!(reply["error"]["data"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    gw.finish(&mut back);
    let rec = audit(&back);
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["reason"], "A2A_DELEGATION_LOOP");
    assert_eq!(rec["rpc_error_code"], codes::DELEGATION_LOOP);
    assert_eq!(rec["hop"], 3);

    // B calls C (hop 3, allowed), C calls D: hop 4 > 3.
    let hop3 = gw.request("agent-c", "POST", "/agents/c/", &refs(&h), Some(&body));
    assert_eq!(hop3.upstream(chain::HOP).as_deref(), Some("3"));
    let h = with(&forwarded(&hop3), &[]);
    let hop4 = gw.request("agent-d", "POST", "/agents/d/", &refs(&h), Some(&body));
    let (_, reply) = hop4.reply().unwrap();
    assert_eq!(reply["error"]["code"], codes::MAX_DEPTH);
    assert!(reply["error"]["data"].is_object(), "0.3 (no A2A-Version): one ErrorInfo object");
    assert_eq!(reply["error"]["data"]["reason"], "A2A_MAX_DEPTH");
}

#[test]
fn untrusted_context_is_replaced() {
    let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let forged = [V10, (chain::HOP, "7"), (chain::CHAIN, "x,y"), (chain::ON_BEHALF_OF, "ceo"), (chain::SIG, "v1.99999999999.00"), ("x-tollgate-a2a-other", "z")];
    let mut call = gw.request("agent-a", "POST", "/", &forged, Some(&body));
    assert_eq!(call.upstream(chain::HOP).as_deref(), Some("1"));
    assert_eq!(call.upstream(chain::CHAIN).as_deref(), Some("agent-a"));
    assert_eq!(call.upstream(chain::ON_BEHALF_OF), None);
    assert_eq!(call.upstream("x-tollgate-a2a-other"), None);
    gw.finish(&mut call);
    assert_eq!(audit(&call)["caller_trust"], "none");
}

#[test]
fn trusted_agent_by_api_key_and_on_behalf_of() {
    let gw = Gateway::new(json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"key-a"), "name": "a", "principal": "svc-a"},
            {"sha256": sha256_hex(b"key-u"), "name": "u", "principal": "alice"}]}},
        "delegation": {"trusted_agents": [{"principal": "svc-a", "agent": "agent-a"}]}
    }));
    let body = send_body("SendMessage", v10_message(json!({})));
    let user = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-u"), (chain::HOP, "5")], Some(&body));
    assert_eq!(user.upstream(chain::HOP).as_deref(), Some("1"), "a user is not trusted to set the hop");
    assert_eq!(user.upstream(chain::ON_BEHALF_OF).as_deref(), Some("alice"));
    let mut h = forwarded(&user);
    h.push(("x-api-key".into(), "key-a".into()));
    let mut agent = gw.request("agent-b", "POST", "/", &refs(&h), Some(&body));
    assert_eq!(agent.upstream(chain::HOP).as_deref(), Some("2"));
    assert_eq!(agent.upstream(chain::CHAIN).as_deref(), Some("agent-a,agent-b"));
    assert_eq!(agent.upstream(chain::ON_BEHALF_OF).as_deref(), Some("alice"));
    gw.finish(&mut agent);
    let rec = audit(&agent);
    assert_eq!(rec["caller"], "agent-a");
    assert_eq!(rec["caller_trust"], "identity");
    assert_eq!(rec["on_behalf_of"], "alice");
    assert_eq!(rec["identity"]["principal"], "svc-a");

    let bad = gw.request("agent-b", "POST", "/", &[V10, ("x-api-key", "nope")], Some(&body));
    let (status, reply) = bad.reply().unwrap();
    assert_eq!(status, 401);
    assert_eq!(reply["error"]["code"], codes::UNAUTHENTICATED);
}

#[test]
fn only_the_originator_may_cancel() {
    let gw = Gateway::new(json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"key-alice"), "name": "a", "principal": "alice"},
            {"sha256": sha256_hex(b"key-bob"), "name": "b", "principal": "bob"}]}},
        "authz": {"rules": [{"id": "cancel-own", "methods": ["CancelTask"], "effect": "allow_originator"}]}
    }));
    let body = send_body("SendStreamingMessage", v10_message(json!({})));
    let mut create = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-alice")], Some(&body));
    let first_event = b"data: {\"result\": {\"task\": {\"id\": \"t-1\", \"contextId\": \"c-1\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n";
    gw.respond(&mut create, "text/event-stream", &[first_event]);
    let cancel = json!({"jsonrpc": "2.0", "id": 9, "method": "CancelTask", "params": {"id": "t-1"}}).to_string();
    let mut bob = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-bob")], Some(cancel.as_bytes()));
    let (status, reply) = bob.reply().unwrap();
    assert_eq!((status, reply["error"]["code"].as_i64()), (200, Some(codes::FORBIDDEN)));
    assert_eq!(reply["id"], 9);
    assert_eq!(reply["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
    gw.finish(&mut bob);
    assert_eq!(audit(&bob)["rule_id"], "cancel-own");
    let alice = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-alice")], Some(cancel.as_bytes()));
    assert_eq!(alice.step, Step::Continue);
    assert!(alice.reply().is_none());
    // Unknown task: refused (fail closed).
    let other = json!({"jsonrpc": "2.0", "id": 9, "method": "tasks/cancel", "params": {"id": "t-x"}}).to_string();
    assert!(gw.request("agent-a", "POST", "/", &[("x-api-key", "key-alice")], Some(other.as_bytes())).reply().is_some());
}

#[test]
fn streams_pass_chunk_by_chunk_and_ids_are_recorded_at_the_first_event() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendStreamingMessage", v10_message(json!({})));
    let mut call = gw.request("agent-a", "POST", "/", &[V10, ("accept", "text/event-stream")], Some(&body));
    *call.host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    assert_eq!(call.ex.on_response_headers(&call.host, false), Step::Continue);
    let events = [
        "data: {\"result\": {\"task\": {\"id\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n",
        "data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_WORKING\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n",
        "data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_INPUT_REQUIRED\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n",
    ];
    *call.host.response_body.borrow_mut() = events[0].as_bytes().to_vec();
    assert_eq!(call.ex.on_response_body(&call.host, events[0].len(), false), Step::Continue);
    assert!(conversations::lookup(&call.host, &call.ex.state.table, "ctx:c", |_| ()).is_some(), "a downstream hop can join while the stream is open");
    let (agent, orig) = conversations::lookup(&call.host, &call.ex.state.table, &task_key("agent-a", "t"), |e| (e.agent.map(Cow::into_owned), e.orig.map(Cow::into_owned))).unwrap();
    assert_eq!(agent.as_deref(), Some("agent-a"));
    assert_eq!(orig.as_deref(), Some(ANONYMOUS));
    for e in &events[1..] {
        *call.host.response_body.borrow_mut() = e.as_bytes().to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, e.len(), false), Step::Continue);
    }
    call.ex.on_response_body(&call.host, 0, true);
    call.ex.on_log(&call.host);
    let rec = audit(&call);
    assert_eq!(rec["task_state"], "input_required");
    assert_eq!(rec["events"], 3);
    assert_eq!(rec["streaming"], true);
    assert!(rec["ttfe_ms"].is_u64());
}

#[test]
fn card_is_rewritten_with_its_length() {
    let gw = Gateway::new(json!({}));
    let mut call = gw.request("agent-echo", "GET", "/agents/echo/.well-known/agent-card.json", &[], None);
    assert_eq!(call.step, Step::Continue);
    let card = json!({"name": "echo", "url": "http://127.0.0.1:9101/",
        "supportedInterfaces": [{"url": "http://127.0.0.1:9101/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]})
    .to_string();
    *call.host.response_headers.borrow_mut() = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), card.len().to_string()),
    ];
    assert_eq!(call.ex.on_response_headers(&call.host, false), Step::Pause, "headers held until the card is rewritten");
    let (a, _) = card.as_bytes().split_at(10);
    *call.host.response_body.borrow_mut() = a.to_vec();
    assert_eq!(call.ex.on_response_body(&call.host, a.len(), false), Step::Pause);
    *call.host.response_body.borrow_mut() = card.as_bytes().to_vec();
    assert_eq!(call.ex.on_response_body(&call.host, card.len(), true), Step::Continue);
    let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
    assert_eq!(out["url"], "http://gw:10000/agents/echo/");
    assert_eq!(out["supportedInterfaces"][0]["url"], "http://gw:10000/agents/echo/");
    let len = call.host.response_header("content-length").unwrap();
    assert_eq!(len, call.host.response_body.borrow().len().to_string());
    call.ex.on_log(&call.host);
    let rec = audit(&call);
    assert_eq!(rec["method"], "AgentCard");
    assert_eq!(rec["card"]["result"], "rewritten");
    assert_eq!(rec["card"]["urls_rewritten"], 2);
}

#[test]
fn signed_card_kept_or_stripped() {
    let card = json!({"url": "http://a:1/", "signatures": [{"protected": "p", "signature": "s"}]}).to_string();
    for (policy, result, changed) in [("keep", "signed_kept", false), ("strip", "signatures_removed", true)] {
        let gw = Gateway::new(json!({"cards": {"signed": policy, "public_base_url": "https://gw.example"}}));
        let mut call = gw.request("x", "GET", "/.well-known/agent-card.json", &[], None);
        *call.host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
        call.ex.on_response_headers(&call.host, false);
        *call.host.response_body.borrow_mut() = card.as_bytes().to_vec();
        call.ex.on_response_body(&call.host, card.len(), true);
        let out = String::from_utf8(call.host.response_body.borrow().clone()).unwrap();
        assert_eq!(out != card, changed, "{policy}");
        if changed {
            assert!(out.contains("https://gw.example/") && !out.contains("signatures"));
        }
        call.ex.on_log(&call.host);
        assert_eq!(audit(&call)["card"]["result"], result);
    }
}

#[test]
fn bodies_ending_with_trailers_are_decided_and_rewritten() {
    // A request refused by policy whose body ends with trailers: refused at the trailers.
    let gw = Gateway::new(json!({"authz": {"default": "deny"}}));
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/agents/a/"), ("content-type", "application/json"), V10]);
    host.set_prop(&["xds", "cluster_name"], b"a");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    let body = send_body("SendMessage", v10_message(json!({})));
    let driven = drive_ending(&mut ex, &host, Some(&body), &[], &[], Ending::Trailers);
    assert_eq!(driven.request_trailers, Some(Step::Pause));
    let (_, _, reply) = host.local_reply.borrow().clone().expect("refused");
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert!(reply.to_string().contains("A2A_FORBIDDEN"), "{reply}");
    assert_eq!(serde_json::from_slice::<Value>(&host.prop(&["tollgate.audit"]).unwrap()).unwrap()["decision"], "deny");
    // An allowed one gets its hop headers at the trailers.
    let gw = Gateway::new(json!({}));
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/agents/a/"), ("content-type", "application/json"), V10]);
    host.set_prop(&["xds", "cluster_name"], b"a");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    let driven = drive_ending(&mut ex, &host, Some(&body), &[], &[], Ending::Trailers);
    assert_eq!(driven.request_trailers, Some(Step::Continue));
    assert_eq!(host.request_header(chain::HOP).as_deref(), Some("1"));
    // A card whose body ends with trailers is rewritten, its signatures stripped.
    let card = json!({"url": "http://a:1/", "signatures": [{"protected": "p", "signature": "s"}]}).to_string();
    let gw = Gateway::new(json!({"cards": {"signed": "strip", "public_base_url": "https://gw.example"}}));
    let host = MemoryHost::with_request_headers(&[(":method", "GET"), (":path", "/.well-known/agent-card.json")]);
    host.set_prop(&["xds", "cluster_name"], b"a");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    let json_ct = [(":status", "200"), ("content-type", "application/json")];
    let driven = drive_ending(&mut ex, &host, None, &json_ct, &[card.as_bytes()], Ending::Trailers);
    assert_eq!(driven.response_trailers, Some(Step::Continue));
    let out = String::from_utf8(host.response_body.borrow().clone()).unwrap();
    assert!(out.contains("https://gw.example/") && !out.contains("signatures"), "{out}");
}

#[test]
fn forged_gateway_headers_never_pass_and_other_json_rpc_is_checked() {
    let gw = Gateway::new(json!({"identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"key-u"), "name": "u", "principal": "alice"}]}}}));
    let forged = [(chain::HOP, "9"), (chain::CHAIN, "x"), ("x-tollgate-a2a-anything", "y"), ("traceparent", "junk"), ("x-api-key", "key-u")];
    // Not A2A and not a POST: passed on, unrecorded, but without the forged context.
    let mut get = gw.request("a", "GET", "/agents/a/_seen", &forged, None);
    assert_eq!(get.step, Step::Continue);
    assert!(get.reply().is_none());
    assert_eq!((get.upstream(chain::HOP), get.upstream(chain::CHAIN), get.upstream("x-tollgate-a2a-anything")), (None, None, None));
    assert_eq!(get.upstream("traceparent").as_deref(), Some("junk"));
    gw.finish(&mut get);
    assert!(get.host.prop(&["tollgate.audit"]).is_none());
    // A JSON-RPC method A2A does not define: checked, re-issued headers, recorded.
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
    let mut call = gw.request("a", "POST", "/agents/a/", &forged, Some(body));
    assert_eq!(call.step, Step::Continue);
    assert_eq!(call.upstream(chain::HOP).as_deref(), Some("1"));
    assert_eq!(call.upstream(chain::CHAIN).as_deref(), Some("a"));
    assert_eq!(call.upstream("x-tollgate-a2a-anything"), None);
    assert_ne!(call.upstream("traceparent").as_deref(), Some("junk"));
    gw.finish(&mut call);
    let rec = audit(&call);
    assert_eq!((rec["method"].as_str(), rec["jsonrpc_method"].as_str()), (Some("tools/call"), Some("tools/call")));
    assert_eq!(rec["identity"]["principal"], "alice");
    assert_eq!(gw.metrics_value(&call.host, "tollgate.a2a.calls.target.a.method.unknown.state.none"), Some(1));
    let stolen = gw.request("a", "POST", "/agents/a/", &[("x-api-key", "stolen")], Some(body));
    assert_eq!(stolen.reply().unwrap().0, 401);
    // Rules see the method as sent; default deny still refuses it.
    let gw = Gateway::new(json!({"authz": {"default": "deny"}}));
    let (_, reply) = gw.request("a", "POST", "/", &[], Some(body)).reply().unwrap();
    assert_eq!(reply["error"]["data"]["reason"], "A2A_FORBIDDEN");
}

#[test]
fn posts_that_are_not_a2a_are_refused() {
    let gw = Gateway::new(json!({"identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"key-u"), "name": "u", "principal": "alice"}]}}}));
    let cancel = br#"{"jsonrpc":"2.0","id":7,"method":"CancelTask","params":{"id":"t"}}"#;
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut headers = vec![V10, (chain::HOP, "5")];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let host = MemoryHost::with_request_headers(&[&[(":method", "POST"), (":path", "/agents/a/")][..], &headers].concat());
        host.set_prop(&["xds", "cluster_name"], b"a");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, false), Step::Pause, "{ct:?}");
        let (status, _, body) = host.local_reply.borrow().clone().expect("refused before the body");
        let reply: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 415);
        assert_eq!(reply["error"]["code"], -32600);
        assert_eq!(reply["error"]["data"][0]["reason"], "A2A_INVALID_REQUEST");
        assert!(reply["id"].is_null());
        // The body never reaches the agent (the filter keeps refusing).
        *host.request_body.borrow_mut() = cancel.to_vec();
        ex.on_request_body(&host, cancel.len(), true);
        ex.on_log(&host);
        let rec: Value = serde_json::from_slice(&host.prop(&["tollgate.audit"]).unwrap()).unwrap();
        assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("error"), Some("A2A_INVALID_REQUEST")));
    }
    // An unknown credential is still reported as such.
    let call = gw.request("a", "POST", "/", &[("content-type", "text/plain"), ("x-api-key", "stolen")], Some(cancel));
    assert_eq!(call.reply().unwrap().0, 401);
    // Unparseable JSON, an empty body: -32700 (Parse error, as the agent answers), id null;
    // a JSON-RPC response or an invalid request: -32600, with its id when it can be read.
    // Without rules too, and in either dialect.
    for (body, code, id) in [
        (&b"not json at all"[..], -32700, Value::Null),
        (b"\xff\xfe{\x00}\x00", -32700, Value::Null),
        (b" ", -32700, Value::Null),
        (br#"{"jsonrpc":"2.0","id":"r-1","method":"GetTask""#, -32700, Value::Null),
        (br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, -32600, json!(1)),
        (br#"{"jsonrpc":"1.0","id":"r-2","method":"SendMessage","params":{}}"#, -32600, json!("r-2")),
        (br#"{"jsonrpc":"2.0","id":3,"params":{}}"#, -32600, json!(3)),
        (br#"{"jsonrpc":"2.0","id":true,"method":"GetTask"}"#, -32600, Value::Null),
        (b"42", -32600, Value::Null),
    ] {
        for headers in [&[V10][..], &[]] {
            let mut call = gw.request("a", "POST", "/", headers, Some(body));
            let (status, reply) = call.reply().expect("refused");
            assert_eq!((status, reply["error"]["code"].as_i64(), &reply["id"]), (200, Some(code), &id), "{body:?}");
            let info = if headers.is_empty() { &reply["error"]["data"] } else { &reply["error"]["data"][0] };
            assert_eq!(info["reason"], "A2A_INVALID_REQUEST");
            gw.finish(&mut call);
            assert_eq!((audit(&call)["decision"].as_str(), audit(&call)["rpc_error_code"].as_i64()), (Some("error"), Some(code)));
        }
    }
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/"), ("content-type", "application/json")]);
    host.set_prop(&["xds", "cluster_name"], b"a");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, true), Step::Pause);
    let (status, _, body) = host.local_reply.borrow().clone().expect("an empty body is refused at its headers");
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, reply["error"]["code"].as_i64()), (200, Some(-32700)));
    // Duplicate keys are refused without rules too.
    let dup = br#"{"jsonrpc":"2.0","id":1,"method":"GetTask","method":"CancelTask","params":{"id":"t"}}"#;
    assert_eq!(gw.request("a", "POST", "/", &[], Some(dup)).reply().unwrap().1["error"]["code"], -32600);
    // Anywhere in the body: two context ids would put the message in either conversation.
    let nested = br#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"ROLE_USER","messageId":"m","contextId":"a","contextId":"b","parts":[]}}}"#;
    let (_, reply) = gw.request("a", "POST", "/", &[V10], Some(nested)).reply().expect("refused");
    assert_eq!(reply["error"]["code"], -32600);
}

#[test]
fn batches_are_refused() {
    let gw = Gateway::new(json!({}));
    let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"CancelTask","params":{"id":"t"}},{"jsonrpc":"2.0","id":2,"method":"SendMessage","params":{}}]"#;
    let mut call = gw.request("a", "POST", "/", &[V10, (chain::HOP, "9")], Some(batch));
    assert_eq!(call.step, Step::Pause);
    let (status, reply) = call.reply().unwrap();
    assert_eq!((status, reply["error"]["code"].as_i64()), (200, Some(-32600)));
    assert_eq!(reply["error"]["message"], "JSON-RPC batches are not part of A2A");
    assert_eq!(reply["error"]["data"][0]["reason"], "A2A_INVALID_REQUEST");
    gw.finish(&mut call);
    assert_eq!(audit(&call)["reason"], "A2A_INVALID_REQUEST");
}

/// alice creates task `id` at `agent` (JSON response).
fn create_task(gw: &Gateway, agent: &str, key: &str, task: &str) {
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut call = gw.request(agent, "POST", "/", &[V10, ("x-api-key", key)], Some(&body));
    assert_eq!(call.step, Step::Continue);
    gw.respond(&mut call, "application/json", &[&task_json("c", task, "TASK_STATE_WORKING")]);
}

fn originator_gateway() -> Gateway {
    Gateway::new(json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"key-alice"), "name": "a", "principal": "alice"},
            {"sha256": sha256_hex(b"key-mallory"), "name": "m", "principal": "mallory"}]}},
        "authz": {"rules": [{"id": "cancel-own", "methods": ["CancelTask"], "effect": "allow_originator"}]}
    }))
}

#[test]
fn percent_encoded_rest_paths_are_classified_decoded() {
    let gw = originator_gateway();
    create_task(&gw, "agent-a", "key-alice", "t-1");
    for path in ["/agents/a/tasks/t-1%3Acancel", "/agents/a/tasks/t-1%3acancel", "/agents/a/%74asks/t%2D1:cancel"] {
        let call = gw.request("agent-a", "POST", path, &[V10, ("x-api-key", "key-mallory")], None);
        let (status, body) = call.reply().unwrap_or_else(|| panic!("{path} passed"));
        assert_eq!(status, 403, "{path}");
        assert_eq!(body["error"]["details"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
    }
    let alice = gw.request("agent-a", "POST", "/agents/a/tasks/t-1%3Acancel", &[V10, ("x-api-key", "key-alice")], None);
    assert_eq!(alice.step, Step::Continue);
    assert_eq!(alice.upstream(chain::TASK_ID).as_deref(), Some("t-1"));
    for path in ["/agents/a/tasks%2Ft-1:cancel", "/agents/a/tasks/t-1%3:cancel", "/agents/a/tasks/t%00:cancel"] {
        let mut call = gw.request("agent-a", "POST", path, &[V10, ("x-api-key", "key-alice"), (chain::HOP, "3")], None);
        let (status, body) = call.reply().unwrap_or_else(|| panic!("{path} passed"));
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["error"]["details"][0]["reason"], "A2A_INVALID_REQUEST");
        gw.finish(&mut call);
        assert_eq!(audit(&call)["binding"], "rest");
    }
    // Not even a GET with an ambiguous path passes.
    assert_eq!(gw.request("agent-a", "GET", "/agents/a/x%2Fy", &[], None).reply().unwrap().0, 400);
}

#[test]
fn task_ids_are_per_agent_and_a_live_entry_is_never_taken_over() {
    let gw = originator_gateway();
    create_task(&gw, "agent-a", "key-alice", "t-1");
    // Another agent returns the same id to mallory: her task there, not alice's.
    create_task(&gw, "agent-b", "key-mallory", "t-1");
    let cancel = json!({"jsonrpc": "2.0", "id": 9, "method": "CancelTask", "params": {"id": "t-1"}}).to_string();
    let cancel_as = |agent: &str, key: &str| gw.request(agent, "POST", "/", &[V10, ("x-api-key", key)], Some(cancel.as_bytes()));
    assert_eq!(cancel_as("agent-a", "key-mallory").reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
    assert_eq!(cancel_as("agent-b", "key-mallory").step, Step::Continue);
    assert_eq!(cancel_as("agent-a", "key-alice").step, Step::Continue);
    assert!(cancel_as("agent-b", "key-alice").reply().is_some());
    // agent-a itself hands mallory alice's id again: the entry is kept.
    create_task(&gw, "agent-a", "key-mallory", "t-1");
    assert!(cancel_as("agent-a", "key-mallory").reply().is_some());
    assert_eq!(cancel_as("agent-a", "key-alice").step, Step::Continue);
}

#[test]
fn a_colliding_task_id_neither_excuses_nor_breaks_a_continuation() {
    let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut hop1 = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
    gw.respond(&mut hop1, "application/json", &[&task_json("c-a", "t-same", "TASK_STATE_INPUT_REQUIRED")]);
    let h = with(&forwarded(&hop1), &[V10]);
    let mut hop2 = gw.request("agent-b", "POST", "/", &refs(&h), Some(&body));
    // agent-b returns the same task id (later, so it would have overwritten a's entry).
    gw.respond(&mut hop2, "application/json", &[&task_json("c-b", "t-same", "TASK_STATE_WORKING")]);
    let h = with(&forwarded(&hop2), &[V10]);
    let answer = send_body("SendMessage", v10_message(json!({"taskId": "t-same"})));
    assert_eq!(gw.request("agent-a", "POST", "/", &refs(&h), Some(&answer)).step, Step::Continue, "a owns t-same");
    // A third agent never returned t-same: no exemption there.
    let mut hop3 = gw.request("agent-c", "POST", "/", &refs(&h), Some(&body));
    gw.respond(&mut hop3, "application/json", &[&task_json("c-c", "t-other", "TASK_STATE_WORKING")]);
    let h = with(&forwarded(&hop3), &[V10]);
    let back_to_b = gw.request("agent-b", "POST", "/", &refs(&h), Some(&answer));
    assert_eq!(back_to_b.step, Step::Continue, "b owns t-same too (its own entry)");
    let fresh = send_body("SendMessage", v10_message(json!({"taskId": "t-other"})));
    let to_a = gw.request("agent-a", "POST", "/", &refs(&h), Some(&fresh));
    assert_eq!(to_a.reply().unwrap().1["error"]["code"], codes::DELEGATION_LOOP, "t-other is agent-c's");
}

#[test]
fn credentials_are_not_forwarded_unless_configured() {
    let keys = json!({"api_keys": {"headers": ["x-tollgate-key"], "keys": [
        {"sha256": sha256_hex(b"key-a"), "name": "a", "principal": "svc-a"}]}});
    let creds = [V10, ("x-tollgate-key", "key-a"), ("authorization", "Bearer other"), ("x-api-key", "x"), ("x-goog-api-key", "y")];
    let body = send_body("SendMessage", v10_message(json!({})));
    let gw = Gateway::new(json!({"identity": keys.clone(), "delegation": {"trusted_agents": [{"principal": "svc-a"}]}}));
    let mut call = gw.request("agent-b", "POST", "/", &creds, Some(&body));
    assert_eq!(call.step, Step::Continue);
    for h in ["x-tollgate-key", "authorization", "x-api-key", "x-goog-api-key"] {
        assert_eq!(call.upstream(h), None, "{h}");
    }
    gw.finish(&mut call);
    assert_eq!(audit(&call)["caller_trust"], "identity", "the key was read before it was removed");
    let card = gw.request("agent-b", "GET", "/.well-known/agent-card.json", &creds, None);
    assert_eq!(card.upstream("x-tollgate-key"), None);
    let other = gw.request("agent-b", "GET", "/health", &creds, None);
    assert_eq!(other.upstream("authorization"), None);
    let gw = Gateway::new(json!({"identity": keys, "forward_credentials": true}));
    let call = gw.request("agent-b", "POST", "/", &creds, Some(&body));
    assert_eq!(call.upstream("x-tollgate-key").as_deref(), Some("key-a"));
    assert_eq!(call.upstream("authorization").as_deref(), Some("Bearer other"));
}

#[test]
fn ids_with_control_characters_never_become_headers() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendMessage", v10_message(json!({"contextId": "c\r\nx-evil: 1", "messageId": "m-ok"})));
    let call = gw.request("a", "POST", "/", &[V10], Some(&body));
    assert_eq!(call.step, Step::Continue);
    assert_eq!(call.upstream(chain::CONTEXT_ID), None);
    assert_eq!(call.upstream(chain::MESSAGE_ID).as_deref(), Some("m-ok"));
}

#[test]
fn strict_mode_refuses_ambiguous_bodies() {
    let gw = Gateway::new(json!({"authz": {"rules": [{"methods": ["CancelTask"], "effect": "deny"}]}}));
    let dup = br#"{"jsonrpc":"2.0","id":1,"method":"GetTask","method":"CancelTask","params":{"id":"t"}}"#;
    let call = gw.request("a", "POST", "/", &[], Some(dup));
    assert_eq!(call.reply().unwrap().1["error"]["code"], -32600);
    let call = gw.request("a", "POST", "/", &[V10], Some(br#"{"jsonrpc":"2.0","id":1,"method":"CancelTask","params":{"id":"t"}}"#));
    let (_, reply) = call.reply().unwrap();
    assert_eq!(reply["error"]["data"][0]["reason"], "A2A_FORBIDDEN");
}

#[test]
fn rest_calls_are_classified_and_refused_with_http_status() {
    let gw = Gateway::new(json!({"authz": {"rules": [{"targets": ["locked"], "effect": "deny"}]}}));
    let mut get = gw.request("agent-a", "GET", "/agents/a/tasks/t-5", &[V10], None);
    assert_eq!(get.step, Step::Continue);
    assert_eq!(get.upstream(chain::TASK_ID).as_deref(), Some("t-5"));
    gw.respond(&mut get, "application/a2a+json", &[br#"{"id":"t-5","contextId":"c-5","status":{"state":"TASK_STATE_WORKING"}}"#]);
    let rec = audit(&get);
    assert_eq!((rec["binding"].as_str(), rec["method"].as_str(), rec["task_state"].as_str()), (Some("rest"), Some("GetTask"), Some("working")));
    assert_eq!(rec["context_id"], "c-5");
    let send = gw.request("locked", "POST", "/message:send", &[V10], Some(br#"{"message":{"messageId":"m"}}"#));
    let (status, body) = send.reply().unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["details"][0]["reason"], "A2A_FORBIDDEN");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
}

#[test]
fn message_parts_logged_only_when_configured() {
    let gw = Gateway::new(json!({"log_message_parts": true}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut call = gw.request("a", "POST", "/", &[V10], Some(&body));
    gw.finish(&mut call);
    assert!(audit(&call)["message_parts"].as_str().unwrap().contains("secret words"));
}

#[test]
fn oversized_request_is_refused_before_the_whole_body_arrives() {
    let gw = Gateway::new(json!({"limits": {"max_request_body_bytes": 64}}));
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/"), ("content-type", "application/json"), V10]);
    host.set_prop(&["xds", "cluster_name"], b"agent-a");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    assert_eq!(ex.on_request_body(&host, 32, false), Step::Pause);
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(ex.on_request_body(&host, 65, false), Step::Pause);
    assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(413));
    ex.on_log(&host);
    let rec: Value = serde_json::from_slice(&host.prop(&["tollgate.audit"]).unwrap()).unwrap();
    assert_eq!(rec["reason"], "A2A_REQUEST_TOO_LARGE");
    assert_eq!(rec["decision"], "error");
}

#[test]
fn continuing_a_task_the_target_owns_is_not_a_loop() {
    let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut hop1 = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
    gw.respond(&mut hop1, "application/json", &[&task_json("c-a", "task-of-a", "TASK_STATE_INPUT_REQUIRED")]);
    let h = with(&forwarded(&hop1), &[V10]);
    let hop2 = gw.request("agent-b", "POST", "/", &refs(&h), Some(&body));
    let h = with(&forwarded(&hop2), &[V10]);
    // B answers A's input-required task: allowed. A fresh message to A: a loop.
    let answer = send_body("SendMessage", v10_message(json!({"taskId": "task-of-a", "contextId": "c-a"})));
    let back = gw.request("agent-a", "POST", "/", &refs(&h), Some(&answer));
    assert_eq!(back.step, Step::Continue);
    assert_eq!(back.upstream(chain::HOP).as_deref(), Some("3"));
    assert_eq!(back.upstream(chain::CHAIN).as_deref(), Some("agent-a,agent-b,agent-a"));
    let fresh = gw.request("agent-a", "POST", "/", &refs(&h), Some(&body));
    assert_eq!(fresh.reply().unwrap().1["error"]["code"], codes::DELEGATION_LOOP);
    // A task id the table says belongs to another agent does not excuse the loop.
    let foreign = send_body("SendMessage", v10_message(json!({"taskId": "task-of-a"})));
    let at_b = gw.request("agent-b", "POST", "/", &refs(&h), Some(&foreign));
    assert_eq!(at_b.reply().unwrap().1["error"]["code"], codes::DELEGATION_LOOP);
}

#[test]
fn on_behalf_of_from_a_jwt_claim() {
    let gw = Gateway::new(json!({
        "identity": {"jwt": {"payload_key": "payload"}},
        "on_behalf_of": {"jwt_claim": "act.sub"}
    }));
    let body = send_body("SendMessage", v10_message(json!({})));
    let all = [(":method", "POST"), (":path", "/"), ("content-type", "application/json"), V10];
    let host = MemoryHost::with_request_headers(&all);
    host.set_prop(&["xds", "cluster_name"], b"agent-a");
    let base = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"];
    host.set_prop(&[&base[..], &["sub"]].concat(), b"agent-app");
    host.set_prop(&[&base[..], &["act", "sub"]].concat(), b"alice");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    *host.request_body.borrow_mut() = body.clone();
    assert_eq!(ex.on_request_body(&host, body.len(), true), Step::Continue);
    assert_eq!(host.request_header(chain::ON_BEHALF_OF).as_deref(), Some("alice"));
    assert_eq!(host.request_header(chain::CALLER).as_deref(), Some("agent-app"));
}

#[test]
fn a_referenced_task_joins_its_trace() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut first = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
    gw.respond(&mut first, "application/json", &[&task_json("c-1", "t-1", "TASK_STATE_COMPLETED")]);
    let trace_id = audit(&first)["trace_id"].clone();
    let follow = send_body("SendMessage", v10_message(json!({"referenceTaskIds": ["unknown", "t-1"]})));
    let mut other = gw.request("agent-z", "POST", "/", &[V10], Some(&follow));
    gw.finish(&mut other);
    let rec = audit(&other);
    assert_eq!(rec["trace_id"], trace_id);
    assert_eq!(rec["trace_source"], "conversation");
    assert_eq!(rec["reference_task_ids"], json!(["unknown", "t-1"]));
}

#[test]
fn rest_loop_is_a_409_and_the_cluster_names_an_agent_without_metadata() {
    let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
    let hop1 = gw.request("agent-a", "POST", "/a/message:send", &[V10], Some(br#"{"message":{"messageId":"m"}}"#));
    let h = with(&forwarded(&hop1), &[V10]);
    let back = gw.request("agent-a", "POST", "/a/message:send", &refs(&h), Some(br#"{"message":{"messageId":"m2"}}"#));
    let (status, body) = back.reply().unwrap();
    assert_eq!(status, 409);
    assert_eq!(body["error"]["details"][0]["reason"], "A2A_DELEGATION_LOOP");

    let host = MemoryHost::with_request_headers(&[(":method", "GET"), (":path", "/tasks/t1"), V10]);
    host.set_prop(&["xds", "cluster_name"], b"agent_cluster");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, true), Step::Continue);
    assert_eq!(host.request_header(chain::CHAIN).as_deref(), Some("agent_cluster"));
    // A non-string metadata value (YAML `agent: y` is a boolean) is not an identity.
    host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "agent"], &[1]);
    host.request_headers.borrow_mut().retain(|(k, _)| !k.starts_with("x-tollgate-") && k != "traceparent");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, true), Step::Continue);
    assert_eq!(host.request_header(chain::CHAIN).as_deref(), Some("agent_cluster"));

    // Without metadata and without the cluster fallback the route is not an agent's: the
    // request passes, but never with the caller's gateway-owned headers.
    let gw = Gateway::new(json!({"routes": {"cluster_fallback": false}}));
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/x"), ("content-type", "text/plain"), (chain::HOP, "9"), ("x-api-key", "k")]);
    host.set_prop(&["xds", "cluster_name"], b"agent_cluster");
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, false), Step::Continue);
    assert_eq!(host.request_header(chain::HOP), None);
    assert_eq!(host.request_header("x-api-key").as_deref(), Some("k"), "not an agent route: credentials untouched");
    assert!(host.local_reply.borrow().is_none());
}

#[test]
fn what_a_response_reveals_is_recorded_and_published_once() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let mut call = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
    let tp = call.upstream("traceparent").unwrap();
    call.host.calls.borrow_mut().clear();
    // Two chunks: the ids count once the document is complete, at the end of the body;
    // the tracker is consulted again there and at log time.
    let response = task_json("c-new", "t-new", "TASK_STATE_COMPLETED");
    let (a, b) = response.split_at(response.len() - 3);
    gw.respond(&mut call, "application/json", &[a, b]);
    let calls = call.host.calls.borrow().clone();
    let count = |prefix: &str| calls.iter().filter(|c| c.starts_with(prefix)).count();
    // One write each: the new context, the task (owner, originator) and its reference.
    assert_eq!(count("set_shared_data"), 3, "{calls:#?}");
    assert_eq!(count("set_property tollgate.a2a."), 3, "context_id, task_id, task_state: {calls:#?}");
    assert_eq!(conversations::lookup(&call.host, &call.ex.state.table, "ctx:c-new", |e| e.tp.into_owned()).as_deref(), Some(tp.as_str()));
    assert_eq!(call.host.prop(&["tollgate.a2a.context_id"]).as_deref(), Some(&b"c-new"[..]));
    assert_eq!(call.host.prop(&["tollgate.a2a.task_state"]).as_deref(), Some(&b"completed"[..]));
}

#[test]
fn request_headers_are_read_first_value_first_and_empty_as_absent() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendMessage", v10_message(json!({})));
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [V10, ("traceparent", ""), ("traceparent", valid), ("x-request-id", "r-1"), ("x-request-id", "r-2")];
    let mut call = gw.request("agent-a", "POST", "/", &headers, Some(&body));
    gw.finish(&mut call);
    let rec = audit(&call);
    assert_eq!(rec["trace_source"], "new", "an empty first traceparent is no traceparent");
    assert_eq!(rec["request_id"], "r-1");
}

// ----- originator-only task access, HTTP methods -------------------------------------

const ALICE: (&str, &str) = ("authorization", "Bearer k-alice");
const BOB: (&str, &str) = ("authorization", "Bearer k-bob");

/// Alice and Bob known by API key; reading a task is its originator's alone (the shipped rule).
fn owners_gateway(extra: Value) -> Gateway {
    let mut config = json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"k-alice"), "name": "alice", "principal": "alice"},
            {"sha256": sha256_hex(b"k-bob"), "name": "bob", "principal": "bob"}]}},
        "authz": {"rules": [{"id": "own-tasks", "effect": "allow_originator",
            "methods": ["GetTask", "ListTasks", "CancelTask", "SubscribeToTask", "*PushNotificationConfig*"]}]}
    });
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    Gateway::new(config)
}

/// Creates task `task` at `agent` as the caller `who` says (no header: anonymous).
fn create_task_as(gw: &Gateway, agent: &str, who: &[(&str, &str)], task: &str) {
    let body = send_body("SendMessage", v10_message(json!({})));
    let headers: Vec<(&str, &str)> = [V10].into_iter().chain(who.iter().copied()).collect();
    let mut call = gw.request(agent, "POST", "/", &headers, Some(&body));
    assert_eq!(call.step, Step::Continue);
    gw.respond(&mut call, "application/json", &[&task_json(&format!("ctx-{task}"), task, "TASK_STATE_COMPLETED")]);
}

fn rpc_body(method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string().into_bytes()
}

/// Sends the whole response at once (a held answer is read as one buffer) and logs.
fn respond_whole(gw: &Gateway, call: &mut Call, headers: &[(&str, &str)], body: &[u8]) -> (Step, Step) {
    let mut all = vec![(":status".to_string(), "200".to_string())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    *call.host.response_headers.borrow_mut() = all;
    let on_headers = callback(&call.host, |h| call.ex.on_response_headers(h, false));
    *call.host.response_body.borrow_mut() = body.to_vec();
    let on_body = callback(&call.host, |h| call.ex.on_response_body(h, body.len(), true));
    gw.finish(call);
    (on_headers, on_body)
}

fn task_list(ids: &[&str]) -> Value {
    let tasks: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "contextId": format!("ctx-{id}"), "status": {"state": "TASK_STATE_COMPLETED"},
                         "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": format!("text of {id}")}]}]}))
        .collect();
    json!({"tasks": tasks, "nextPageToken": "", "pageSize": 50, "totalSize": ids.len()})
}

#[test]
fn reading_a_task_is_its_originators_alone() {
    let gw = owners_gateway(json!({}));
    create_task_as(&gw, "echo", &[ALICE], "t-alice");
    create_task_as(&gw, "echo", &[], "t-anon");
    let calls: Vec<(&str, Value, bool)> = vec![
        ("GetTask", json!({"id": "t-alice"}), true),
        ("SubscribeToTask", json!({"id": "t-alice"}), true),
        ("CreateTaskPushNotificationConfig", json!({"taskId": "t-alice", "url": "http://hook"}), true),
        ("GetTaskPushNotificationConfig", json!({"taskId": "t-alice", "id": "cfg"}), true),
        ("ListTaskPushNotificationConfigs", json!({"taskId": "t-alice"}), true),
        ("DeleteTaskPushNotificationConfig", json!({"taskId": "t-alice", "id": "cfg"}), true),
        ("tasks/get", json!({"id": "t-alice"}), false),
        ("tasks/resubscribe", json!({"id": "t-alice"}), false),
        ("tasks/pushNotificationConfig/get", json!({"id": "t-alice"}), false),
        ("tasks/pushNotificationConfig/list", json!({"id": "t-alice"}), false),
    ];
    for (method, params, v10) in calls {
        let body = rpc_body(method, params);
        fn with(v10: bool, who: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
            (if v10 { vec![V10] } else { vec![] }).into_iter().chain(who.iter().copied()).collect()
        }
        for who in [&[BOB][..], &[][..]] {
            let mut refused = gw.request("echo", "POST", "/", &with(v10, who), Some(&body));
            let (status, reply) = refused.reply().unwrap_or_else(|| panic!("{method} by {who:?} passed"));
            assert_eq!(status, 200, "{method}");
            let error = &reply["error"];
            assert_eq!(error["code"], codes::FORBIDDEN, "{method}");
            let info = if v10 { &error["data"][0] } else { &error["data"] };
            assert_eq!(info["reason"], "A2A_NOT_TASK_ORIGINATOR", "{method}");
            gw.finish(&mut refused);
            assert_eq!((audit(&refused)["decision"].as_str(), audit(&refused)["rule_id"].as_str()), (Some("deny"), Some("own-tasks")));
        }
        let by_alice = gw.request("echo", "POST", "/", &with(v10, &[ALICE]), Some(&body));
        assert_eq!(by_alice.step, Step::Continue, "{method} by its originator");
        assert!(by_alice.reply().is_none());
    }
    // REST too; and a task created anonymously is nobody's (anonymous is not an identity).
    let by_bob = gw.request("echo", "GET", "/tasks/t-alice", &[V10, BOB], None);
    assert_eq!(by_bob.reply().map(|(s, b)| (s, b["error"]["details"][0]["reason"].clone())), Some((403, json!("A2A_NOT_TASK_ORIGINATOR"))));
    assert_eq!(gw.request("echo", "GET", "/tasks/t-alice:subscribe", &[V10, ALICE], None).step, Step::Continue);
    for who in [&[][..], &[ALICE][..]] {
        let anon_task = gw.request("echo", "GET", "/tasks/t-anon", &[&[V10][..], who].concat(), None);
        assert_eq!(anon_task.reply().map(|r| r.0), Some(403), "{who:?}");
    }
    let cancel = gw.request("echo", "POST", "/", &[V10], Some(&rpc_body("CancelTask", json!({"id": "t-anon"}))));
    assert_eq!(cancel.reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR", "not even the anonymous");
}

#[test]
fn a_task_the_gateway_has_no_record_of_is_not_found() {
    let gw = owners_gateway(json!({}));
    create_task_as(&gw, "echo", &[ALICE], "t-alice");
    // Unknown here (never seen, or created at another agent): A2A's TaskNotFoundError in the
    // agent's own shape, for anyone, never forwarded; the record says the gateway answered.
    for who in [&[ALICE][..], &[BOB], &[]] {
        for (method, params) in [
            ("GetTask", json!({"id": "t-unknown"})),
            ("CancelTask", json!({"id": "t-unknown"})),
            ("SubscribeToTask", json!({"id": "t-unknown"})),
            ("GetTaskPushNotificationConfig", json!({"taskId": "t-unknown", "id": "c"})),
        ] {
            let headers: Vec<_> = [V10].into_iter().chain(who.iter().copied()).collect();
            let mut call = gw.request("other", "POST", "/", &headers, Some(&rpc_body(method, params)));
            let (status, reply) = call.reply().unwrap_or_else(|| panic!("{method} forwarded"));
            assert_eq!(status, 200);
            assert_eq!(
                reply,
                json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32001, "message": "Task not found", "data": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "TASK_NOT_FOUND",
                     "domain": "a2a-protocol.org", "metadata": {}}]}}),
                "{method}"
            );
            gw.finish(&mut call);
            let rec = audit(&call);
            assert_eq!(
                (rec["decision"].as_str(), rec["reason"].as_str(), rec["rule_id"].as_str(), rec["rpc_error_code"].as_i64()),
                (Some("deny"), Some("A2A_TASK_NOT_FOUND"), Some("own-tasks"), Some(-32001))
            );
        }
    }
    // 0.3: `"data": null`, as the SDK's 0.3 handler answers.
    let call = gw.request("echo", "POST", "/", &[ALICE], Some(&rpc_body("tasks/cancel", json!({"id": "t-unknown"}))));
    assert_eq!(
        call.reply().unwrap().1,
        json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32001, "message": "Task not found", "data": null}})
    );
    // REST: 404 NOT_FOUND.
    let call = gw.request("echo", "GET", "/tasks/t-unknown", &[V10, BOB], None);
    let (status, body) = call.reply().unwrap();
    assert_eq!(status, 404);
    assert_eq!((body["error"]["status"].as_str(), body["error"]["details"][0]["reason"].as_str()), (Some("NOT_FOUND"), Some("TASK_NOT_FOUND")));
    assert_eq!(body["error"]["details"][0]["domain"], "a2a-protocol.org");
    // A known task stays its originator's: another caller is refused as before, and a call
    // naming no task at all is not "not found".
    let bob = gw.request("echo", "POST", "/", &[V10, BOB], Some(&rpc_body("GetTask", json!({"id": "t-alice"}))));
    assert_eq!(bob.reply().unwrap().1["error"]["code"], codes::FORBIDDEN);
    let alice = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("GetTask", json!({"id": "t-alice"}))));
    assert_eq!(alice.step, Step::Continue);
    let nameless = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("GetTask", json!({}))));
    assert_eq!(nameless.reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
    // Without allow_originator the agent answers for itself.
    let open = Gateway::new(json!({}));
    assert_eq!(open.request("echo", "POST", "/", &[V10], Some(&rpc_body("GetTask", json!({"id": "t-unknown"})))).step, Step::Continue);
}

#[test]
fn list_tasks_shows_only_the_callers_own_tasks() {
    let gw = owners_gateway(json!({}));
    create_task_as(&gw, "echo", &[ALICE], "t-alice");
    create_task_as(&gw, "echo", &[BOB], "t-bob");
    create_task_as(&gw, "echo", &[], "t-anon");
    create_task_as(&gw, "other", &[ALICE], "t-other");
    let everything = ["t-alice", "t-bob", "t-anon", "t-other", "t-unknown"];

    // JSON-RPC: the answer is held, then cut down to Alice's tasks at this agent.
    let answer = json!({"jsonrpc": "2.0", "id": 9, "result": task_list(&everything)}).to_string();
    let mut call = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("ListTasks", json!({}))));
    assert_eq!(call.step, Step::Continue);
    let steps = respond_whole(&gw, &mut call, &[("content-type", "application/json"), ("content-length", &answer.len().to_string())], answer.as_bytes());
    assert_eq!(steps, (Step::Pause, Step::Continue));
    let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
    let ids: Vec<&str> = out["result"]["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["t-alice"]);
    assert_eq!(out["result"]["totalSize"], 1);
    assert!(!out.to_string().contains("text of t-bob"));
    assert_eq!(call.host.response_header("content-length"), Some(call.host.response_body.borrow().len().to_string()));
    let rec = audit(&call);
    assert_eq!((rec["decision"].as_str(), rec["method"].as_str(), rec["tasks_withheld"].as_u64()), (Some("allow"), Some("ListTasks"), Some(4)));

    // REST `GET /tasks`: Bob sees Bob's.
    let answer = task_list(&everything).to_string();
    let mut call = gw.request("echo", "GET", "/tasks?pageSize=50", &[V10, BOB], None);
    assert_eq!(call.step, Step::Continue);
    respond_whole(&gw, &mut call, &[("content-type", "application/a2a+json")], answer.as_bytes());
    let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
    assert_eq!(out["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect::<Vec<_>>(), [json!("t-bob")]);

    // Anonymous: refused (an anonymous caller originates nothing it could list).
    let anon = gw.request("echo", "POST", "/", &[V10], Some(&rpc_body("ListTasks", json!({}))));
    assert_eq!(anon.reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
    let anon_rest = gw.request("echo", "GET", "/tasks", &[V10], None);
    assert_eq!(anon_rest.reply().map(|r| r.0), Some(403));

    // An error answer passes as it is; without the rule nothing is held or filtered.
    let error = br#"{"jsonrpc":"2.0","id":9,"error":{"code":-32601,"message":"no"}}"#;
    let mut call = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("ListTasks", json!({}))));
    respond_whole(&gw, &mut call, &[("content-type", "application/json")], error);
    assert_eq!(&call.host.response_body.borrow()[..], &error[..]);
    assert_eq!(audit(&call)["rpc_error_code"], -32601);
    let open = Gateway::new(json!({}));
    let mut call = open.request("echo", "POST", "/", &[V10], Some(&rpc_body("ListTasks", json!({}))));
    let answer = json!({"jsonrpc": "2.0", "id": 9, "result": task_list(&everything)}).to_string();
    let steps = respond_whole(&open, &mut call, &[("content-type", "application/json")], answer.as_bytes());
    assert_eq!(steps, (Step::Continue, Step::Continue));
    assert_eq!(&call.host.response_body.borrow()[..], answer.as_bytes());
}

#[test]
fn a_task_list_that_cannot_be_filtered_is_replaced_by_an_error() {
    let gw = owners_gateway(json!({"limits": {"max_list_response_bytes": 200}}));
    create_task_as(&gw, "echo", &[ALICE], "t-alice");
    let big = json!({"jsonrpc": "2.0", "id": 9, "result": task_list(&["t-alice", "t-bob"])}).to_string();
    let small = json!({"jsonrpc": "2.0", "id": 9, "result": {"tasks": [{"id": "t-bob"}]}}).to_string();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: [Case<'_>; 5] = [
        ("gzip", vec![("content-type", "application/json"), ("content-encoding", "gzip")], small.as_bytes()),
        ("not json", vec![("content-type", "text/plain")], small.as_bytes()),
        ("declared too large", vec![("content-type", "application/json"), ("content-length", "5000")], small.as_bytes()),
        ("too large", vec![("content-type", "application/json")], big.as_bytes()),
        ("ambiguous", vec![("content-type", "application/json")], br#"{"jsonrpc":"2.0","id":9,"result":{"tasks":[]},"result":{"tasks":[{"id":"t-bob"}]}}"#),
    ];
    for (what, headers, body) in cases {
        let mut call = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("ListTasks", json!({}))));
        let steps = respond_whole(&gw, &mut call, &headers, body);
        assert_eq!(steps, (Step::Pause, Step::Continue), "{what}");
        let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out["error"]["code"], codes::UNFILTERABLE, "{what}");
        assert_eq!(out["error"]["data"][0]["reason"], "A2A_RESPONSE_UNFILTERABLE", "{what}");
        assert_eq!(out["id"], 9, "{what}");
        assert_eq!(call.host.response_header(":status").as_deref(), Some("502"), "{what}");
        assert_eq!(call.host.response_header("content-encoding"), None, "{what}");
        let rec = audit(&call);
        assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("error"), Some("A2A_RESPONSE_UNFILTERABLE")), "{what}");
    }
    // Streamed past the limit: the error replaces what was held, the rest is dropped.
    let mut call = gw.request("echo", "GET", "/tasks", &[V10, ALICE], None);
    *call.host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    assert_eq!(call.ex.on_response_headers(&call.host, false), Step::Pause);
    *call.host.response_body.borrow_mut() = big.as_bytes()[..150].to_vec();
    assert_eq!(call.ex.on_response_body(&call.host, 150, false), Step::Pause);
    *call.host.response_body.borrow_mut() = big.as_bytes()[..250].to_vec();
    assert_eq!(call.ex.on_response_body(&call.host, 250, false), Step::Continue);
    let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
    assert_eq!((out["error"]["code"].clone(), out["error"]["status"].clone()), (json!(502), json!("INTERNAL")));
    *call.host.response_body.borrow_mut() = big.as_bytes()[250..].to_vec();
    assert_eq!(call.ex.on_response_body(&call.host, big.len() - 250, true), Step::Continue);
    assert!(call.host.response_body.borrow().is_empty(), "the rest of the list never goes out");
}

#[test]
fn http_methods_a2a_does_not_use_are_refused_with_a_record() {
    let gw = Gateway::new(json!({}));
    let body = send_body("SendMessage", v10_message(json!({})));
    for method in ["PUT", "PATCH", "put"] {
        let mut call = gw.request("echo", method, "/", &[V10], Some(&body));
        assert_eq!(call.step, Step::Pause, "{method}");
        let (status, headers, reply) = call.host.local_reply.borrow().clone().expect("refused");
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(status, 405);
        assert!(headers.iter().any(|(k, v)| k == "allow" && v == "GET, POST, DELETE"), "{headers:?}");
        assert_eq!(reply["error"]["code"], -32600);
        assert_eq!(reply["error"]["data"][0]["reason"], "A2A_INVALID_REQUEST");
        assert_eq!(call.host.request_body.borrow().len(), 0, "the body was never read, let alone passed");
        gw.finish(&mut call);
        let rec = audit(&call);
        assert_eq!((rec["decision"].as_str(), rec["http_method"].as_str(), rec["binding"].as_str()), (Some("error"), Some(method), Some("jsonrpc")));
    }
    // Not JSON-RPC's media type: the HTTP+JSON error shape.
    let call = gw.request("echo", "PATCH", "/tasks/t-1", &[V10, ("content-type", "application/a2a+json")], Some(b"{}"));
    let (status, reply) = call.reply().unwrap();
    assert_eq!((status, reply["error"]["status"].as_str()), (405, Some("UNIMPLEMENTED")));
    assert_eq!(reply["error"]["details"][0]["reason"], "A2A_INVALID_REQUEST");
    // HEAD / OPTIONS without a body carry no call and pass; with one they are refused.
    for method in ["HEAD", "OPTIONS"] {
        let call = gw.request("echo", method, "/", &[], None);
        assert_eq!((call.step, call.reply().is_none()), (Step::Continue, true), "{method}");
        let call = gw.request("echo", method, "/", &[V10], Some(&body));
        assert_eq!(call.reply().map(|r| r.0), Some(405), "{method} with a body");
    }
    // An unknown credential is reported as such first; a non-agent route is not concerned.
    let keyed = Gateway::new(json!({"identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"k"), "name": "k", "principal": "p"}]}}}));
    let call = keyed.request("echo", "PUT", "/", &[("x-api-key", "stolen")], Some(&body));
    assert_eq!(call.reply().map(|r| r.0), Some(401));
    let host = MemoryHost::with_request_headers(&[(":method", "PUT"), (":path", "/x"), ("content-type", "application/json")]);
    let gw = Gateway::new(json!({"routes": {"cluster_fallback": false}}));
    let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
    assert_eq!(ex.on_request_headers(&host, false), Step::Continue);
}

#[test]
fn a_send_message_stays_within_its_host_call_budget() {
    // Each host call costs about 1-2 µs inside Envoy (bench/README.md), more than most of
    // the filter's own work: this pins what one SendMessage with tagging, trace stitching
    // and a signed delegation context spends (the `make bench` workload).
    send_message_within_budget(true, 32);
}

#[test]
fn a_send_message_without_filter_state_tags_stays_within_its_host_call_budget() {
    // The same without the 8 filter-state tags (`filter_state_tags: false`); also the
    // profile's row for that setting (bench/profile.sh).
    send_message_within_budget(false, 24);
}

fn send_message_within_budget(tags: bool, steady_budget: usize) {
    let gw = Gateway::new(json!({
        "identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"k-1"), "name": "k", "principal": "svc"}]}},
        "delegation": {"signing_key": KEY},
        "filter_state_tags": tags
    }));
    let body = send_body("SendMessage", v10_message(json!({"contextId": "ctx-1"})));
    let headers = [V10, ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("authorization", "Bearer k-1")];
    let warm = tollgate_core::testing::profile_rounds();
    for _ in 0..warm {
        gw.quiet.set(true);
        let mut call = gw.request("agent-a", "POST", "/agents/a/", &headers, Some(&body));
        gw.respond(&mut call, "application/json", &[&task_json("ctx-1", "task-warm", "TASK_STATE_COMPLETED")]);
    }
    gw.quiet.set(false);
    for round in 0..2 {
        let mut call = gw.request("agent-a", "POST", "/agents/a/", &headers, Some(&body));
        gw.respond(&mut call, "application/json", &[&task_json("ctx-1", &format!("task-{round}"), "TASK_STATE_COMPLETED")]);
        let calls = call.host.calls.borrow().clone();
        let named = |name: &str| calls.iter().filter(|c| c.split(' ').next() == Some(name)).count();
        assert_eq!(call.step, Step::Continue);
        assert!(call.reply().is_none());
        assert!(call.upstream(chain::SIG).is_some(), "the delegation context is signed");
        // Headers: one snapshot per callback that reads them, no single-header reads, and
        // the upstream headers written in at most two calls (credential strip, then the rest).
        assert_eq!(named("header"), 0, "{calls:#?}");
        assert!(named("headers") <= 3, "{calls:#?}");
        assert!(named("set_header") + named("set_headers") <= 2, "{calls:#?}");
        // Filter state: each tag once (8) plus the audit record.
        assert!(named("set_property") <= 9, "{calls:#?}");
        assert!(named("now_nanos") <= 5, "{calls:#?}");
        // The conversation table: a lookup probes at most 4 slots.
        assert!(named("shared_data") + named("set_shared_data") <= 16, "{calls:#?}");
        // The first round also defines its metrics (once per VM).
        let budget = if round == 0 { steady_budget + 6 } else { steady_budget };
        assert!(calls.len() <= budget, "{} host calls: {calls:#?}", calls.len());
    }
}

#[test]
fn without_filter_state_tags_a_send_message_writes_only_the_audit_record_as_filter_state() {
    // `filter_state_tags: false` (bench/README.md, the A2A feature rows): the same exchange,
    // the same upstream headers, audit record and table, 8 host calls fewer.
    let config = |tags: bool| json!({
        "identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"k-1"), "name": "k", "principal": "svc"}]}},
        "delegation": {"signing_key": KEY},
        "filter_state_tags": tags
    });
    let body = send_body("SendMessage", v10_message(json!({"contextId": "ctx-1"})));
    let headers = [V10, ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("authorization", "Bearer k-1")];
    let run = |tags: bool| {
        let gw = Gateway::new(config(tags));
        let mut call = gw.request("agent-a", "POST", "/agents/a/", &headers, Some(&body));
        gw.respond(&mut call, "application/json", &[&task_json("ctx-1", "task-1", "TASK_STATE_COMPLETED")]);
        let calls = call.host.calls.borrow().clone();
        let props: Vec<String> = calls.iter().filter(|c| c.starts_with("set_property ")).cloned().collect();
        (call, calls.len(), props, gw)
    };
    let (on, on_calls, on_props, _) = run(true);
    let (off, off_calls, off_props, gw_off) = run(false);
    assert_eq!(on_props.len(), 9, "{on_props:?}");
    assert_eq!(off_props, vec!["set_property tollgate.audit".to_string()]);
    assert_eq!(off_calls, on_calls - 8);
    assert_eq!(off.host.prop(&["tollgate.a2a.context_id"]), None);
    assert_eq!(on.host.prop(&["tollgate.a2a.context_id"]).as_deref(), Some(&b"ctx-1"[..]));
    // Everything else is the same: the agent's headers, the record's ids, the table.
    for name in [chain::SIG, chain::HOP, chain::CALLER, chain::CONTEXT_ID, "traceparent"] {
        assert_eq!(on.upstream(name).is_some(), off.upstream(name).is_some(), "{name}");
    }
    assert_eq!(off.upstream(chain::CONTEXT_ID).as_deref(), Some("ctx-1"));
    let record: Value = serde_json::from_slice(&off.host.prop(&["tollgate.audit"]).unwrap()).unwrap();
    assert_eq!(record["context_id"], "ctx-1");
    assert_eq!(record["task_id"], "task-1");
    // The conversation table got its three entries (context, task, referenced task).
    assert_eq!(gw_off.table.borrow().len(), 3, "{:?}", gw_off.table.borrow().keys().collect::<Vec<_>>());
}

#[test]
fn filter_state_tags_must_be_a_boolean() {
    let err = tollgate_core::config::load::<Config>(br#"{"filter_state_tags": "no"}"#).unwrap_err();
    assert!(err.to_string().contains("filter_state_tags"), "{err}");
}

#[test]
fn the_route_key_is_the_context_else_the_tasks_recorded_context_else_the_task() {
    let gw = Gateway::new(json!({}));
    // A caller's own route key never reaches the agent.
    let forged = [V10, (crate::affinity::ROUTE_KEY, "pick-replica-2")];
    let body = send_body("SendMessage", v10_message(json!({"contextId": "ctx-7"})));
    let mut call = gw.request("echo", "POST", "/", &forged, Some(&body));
    assert_eq!(call.upstream(crate::affinity::ROUTE_KEY).as_deref(), Some("ctx-7"));
    gw.respond(&mut call, "application/json", &[&task_json("ctx-7", "t-7", "TASK_STATE_COMPLETED")]);
    // GetTask names only the task: routed by the context its answer revealed.
    let call = gw.request("echo", "POST", "/", &forged, Some(&rpc_body("GetTask", json!({"id": "t-7"}))));
    assert_eq!(call.upstream(crate::affinity::ROUTE_KEY).as_deref(), Some("ctx-7"));
    // A task the gateway has no record of: its own id.
    let call = gw.request("echo", "POST", "/", &forged, Some(&rpc_body("GetTask", json!({"id": "t-other"}))));
    assert_eq!(call.upstream(crate::affinity::ROUTE_KEY).as_deref(), Some("t-other"));
    // A first turn without a context: no key (any replica), and the forged one is gone.
    let body = send_body("SendMessage", v10_message(json!({})));
    let call = gw.request("echo", "POST", "/", &forged, Some(&body));
    assert_eq!(call.upstream(crate::affinity::ROUTE_KEY), None);
}

fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[test]
fn grpc_calls_are_classified_tagged_recorded_and_refused_in_grpc_shape() {
    use tollgate_core::wire::protobuf::Writer;
    let gw = Gateway::new(json!({"authz": {"rules": [
        {"id": "no-cancel", "methods": ["CancelTask"], "effect": "deny"}
    ]}}));
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let mut msg = Writer::new();
    msg.string(1, "m-1").string(2, "ctx-g").uint(4, 1);
    let mut req = Writer::new();
    req.message(2, &msg);
    let body = grpc_frame(req.as_bytes());
    let mut call = gw.request("echo", "POST", "/lf.a2a.v1.A2AService/SendMessage", &grpc, Some(&body));
    assert_eq!(call.step, Step::Continue);
    assert!(call.host.local_reply.borrow().is_none());
    assert_eq!(call.upstream(chain::HOP).as_deref(), Some("1"));
    assert_eq!(call.upstream(chain::CONTEXT_ID).as_deref(), Some("ctx-g"));
    assert_eq!(call.upstream(crate::affinity::ROUTE_KEY).as_deref(), Some("ctx-g"));
    // The answer: SendMessageResponse { task { id, context_id, status { COMPLETED } } }.
    let mut status = Writer::new();
    status.uint(1, 3);
    let mut task = Writer::new();
    task.string(1, "t-g").string(2, "ctx-g").message(3, &status);
    let mut resp = Writer::new();
    resp.message(1, &task);
    let answer = grpc_frame(resp.as_bytes());
    let (a, b) = answer.split_at(7);
    gw.respond(&mut call, "application/grpc", &[a, b]);
    let rec = audit(&call);
    assert_eq!(rec["binding"], "grpc");
    assert_eq!(rec["dialect"], "1.0");
    assert_eq!(rec["method"], "SendMessage");
    assert_eq!(rec["decision"], "allow");
    assert_eq!((rec["message_id"].as_str(), rec["context_id"].as_str(), rec["task_id"].as_str()), (Some("m-1"), Some("ctx-g"), Some("t-g")));
    assert_eq!(rec["task_state"], "completed");

    // A denied method: trailers-only PERMISSION_DENIED, audited.
    let mut cancel = Writer::new();
    cancel.string(2, "t-g");
    let call = gw.request("echo", "POST", "/lf.a2a.v1.A2AService/CancelTask", &grpc, Some(&grpc_frame(cancel.as_bytes())));
    let (status, headers, _) = call.host.local_reply.borrow().clone().expect("refused");
    assert_eq!(status, 200);
    assert!(headers.contains(&("grpc-status".to_string(), "7".to_string())), "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "grpc-message" && v.starts_with("A2A_FORBIDDEN")), "{headers:?}");

    // Unreadable or unknown: INVALID_ARGUMENT, never forwarded.
    for (path, body) in [
        ("/lf.a2a.v1.A2AService/SendMessage", vec![1, 0, 0, 0, 1, 0]),
        ("/lf.a2a.v1.A2AService/SendMessage", vec![0, 0, 0, 0, 9, 1]),
        ("/lf.a2a.v1.A2AService/DropTables", grpc_frame(b"")),
        ("/other.Service/Call", grpc_frame(b"")),
    ] {
        let call = gw.request("echo", "POST", path, &grpc, Some(&body));
        let (_, headers, _) = call.host.local_reply.borrow().clone().unwrap_or_else(|| panic!("{path} passed"));
        assert!(headers.contains(&("grpc-status".to_string(), "3".to_string())), "{path}: {headers:?}");
    }

    // A push URL in SendMessage's configuration: checked as in JSON.
    let mut cfg = Writer::new();
    cfg.string(4, "http://169.254.169.254/");
    let mut conf = Writer::new();
    conf.message(2, &cfg);
    let mut req = Writer::new();
    req.message(2, &msg).message(3, &conf);
    let call = gw.request("echo", "POST", "/lf.a2a.v1.A2AService/SendMessage", &grpc, Some(&grpc_frame(req.as_bytes())));
    let (_, headers, _) = call.host.local_reply.borrow().clone().expect("refused");
    assert!(headers.contains(&("grpc-status".to_string(), "3".to_string())), "{headers:?}");
}

#[test]
fn a_refused_push_webhook_is_answered_in_the_bindings_shape_and_recorded() {
    let gw = Gateway::new(json!({"push_notifications": {"allowed_hosts": ["hooks.internal"]}}));
    let body = rpc_body("CreateTaskPushNotificationConfig", json!({"taskId": "t-1", "url": "http://0251.0376.0251.0376/"}));
    let mut call = gw.request("echo", "POST", "/", &[V10], Some(&body));
    let (status, reply) = call.reply().expect("refused");
    assert_eq!(status, 200);
    assert_eq!(reply["id"], 9);
    assert_eq!(reply["error"]["code"], -32602);
    assert_eq!(reply["error"]["data"][0]["reason"], "A2A_PUSH_URL_REFUSED");
    gw.finish(&mut call);
    let rec = audit(&call);
    assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("deny"), Some("A2A_PUSH_URL_REFUSED")));
    assert_eq!(rec["push_url_refused"], "metadata");
    // HTTP+JSON: 400 INVALID_ARGUMENT.
    let rest = json!({"url": "http://localhost:8080/"}).to_string();
    let call = gw.request("echo", "POST", "/tasks/t-1/pushNotificationConfigs", &[V10, ("content-type", "application/a2a+json")], Some(rest.as_bytes()));
    let (status, reply) = call.reply().expect("refused");
    assert_eq!((status, reply["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    // An allowed host and a public one pass.
    for url in ["http://hooks.internal/cb", "https://hooks.example.com/cb"] {
        let body = rpc_body("CreateTaskPushNotificationConfig", json!({"taskId": "t-1", "url": url}));
        let call = gw.request("echo", "POST", "/", &[V10], Some(&body));
        assert!(call.reply().is_none(), "{url} refused");
        assert_eq!(call.step, Step::Continue);
    }
}

//! The approval flow through a whole exchange against `MemoryHost`: what the service is
//! asked, that the request is held until the answer, forwarded only on an explicit yes.

use super::super::*;
use serde_json::{json, Value};
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::MemoryHost;
use tollgate_core::testing::callback;

const ALICE: &str = "tg-demo-alice";
const TOKEN: u32 = 1001;

fn shared(extra: Value) -> Rc<Shared> {
    let mut cfg = json!({
        "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
            {"sha256": sha256_hex(ALICE.as_bytes()), "name": "alice-key", "principal": "alice", "team": "payments", "groups": ["finance"]}]}},
        "server": {"clusters": {"mcp_demo": "demo"}},
        "policy": {"deny_style": "explain", "rules": [
            {"id": "protocol", "effect": "allow", "principals": ["*"], "methods": ["initialize", "tools/list"]},
            {"id": "tools", "effect": "allow", "principals": ["*"], "tools": ["add", "transfer"]},
            {"id": "big-transfers", "effect": "approve", "principals": ["*"], "tools": ["transfer"],
             "arguments": [{"path": "$.amount", "gt": 1000}]},
            {"id": "no-to-mallory", "effect": "deny", "tools": ["transfer"], "arguments": [{"path": "$.to", "equals": "mallory"}]},
        ]},
        "approval": {"cluster": "approvals", "authority": "approvals.internal", "path": "/v1/approve", "timeout_ms": 2000},
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            match (k.as_str(), v) {
                ("policy", Value::Object(p)) => {
                    for (pk, pv) in p {
                        cfg["policy"][pk] = pv;
                    }
                }
                (_, v) => cfg[k] = v,
            }
        }
    }
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    Rc::new(Shared::build(config).unwrap())
}

fn request() -> MemoryHost {
    let host = MemoryHost::with_request_headers(&[
        (":method", "POST"),
        ("content-type", "application/json"),
        ("x-api-key", ALICE),
        ("x-request-id", "rid-7"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ]);
    host.set_prop(&["xds", "cluster_name"], b"mcp_demo");
    *host.clock_nanos.borrow_mut() = 1_000_000 * 1_000_000_000;
    host
}

fn transfer(amount: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "transfer", "arguments": {"to": "acct-1", "amount": amount}}}).to_string()
}

fn post(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    assert_eq!(callback(host, |h| ex.on_request_headers(h, false)), Step::Pause);
    *host.request_body.borrow_mut() = body.as_bytes().to_vec();
    let step = callback(host, |h| ex.on_request_body(h, body.len(), true));
    (ex, step)
}

fn answer(ex: &mut Exchange, host: &MemoryHost, answer: Result<(u16, &[u8]), ()>) {
    callback(host, |h| ex.on_http_call_response(h, TOKEN, answer));
}

fn asked(host: &MemoryHost) -> (Vec<(String, String)>, Value) {
    let calls = host.http_calls.borrow();
    assert_eq!(calls.len(), 1, "one approval call");
    let (cluster, headers, body) = calls[0].clone();
    assert_eq!(cluster, "approvals");
    (headers, serde_json::from_slice(&body).unwrap())
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
}

fn reply_json(host: &MemoryHost) -> (u32, Value) {
    let (status, _, body) = host.local_reply.borrow().clone().expect("a local reply");
    (status, serde_json::from_slice(&body).unwrap())
}

fn finish(ex: &mut Exchange, host: &MemoryHost) {
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    let body = br#"{"jsonrpc":"2.0","id":9,"result":{"content":[],"isError":false}}"#;
    *host.response_body.borrow_mut() = body.to_vec();
    callback(host, |h| ex.on_response_headers(h, false));
    callback(host, |h| ex.on_response_body(h, body.len(), true));
    callback(host, |h| ex.on_log(h));
}

#[test]
fn a_risky_call_is_held_until_an_explicit_yes_then_forwarded() {
    let shared = shared(json!({}));
    let host = request();
    let (mut ex, step) = post(&shared, &host, &transfer(json!(5000)));

    assert_eq!(step, Step::Pause, "held for the approval");
    assert!(host.local_reply.borrow().is_none() && host.resumed.borrow().is_empty());
    let (headers, body) = asked(&host);
    for (name, value) in [(":method", "POST"), (":path", "/v1/approve"), (":authority", "approvals.internal"), ("content-type", "application/json"), ("x-request-id", "rid-7")] {
        assert!(headers.contains(&(name.to_string(), value.to_string())), "{name}: {headers:?}");
    }
    let digest = sha256_hex(br#"{"amount":5000,"to":"acct-1"}"#);
    assert_eq!(
        body,
        json!({"version": 1, "request_id": "rid-7", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
               "identity": {"principal": "alice", "team": "payments", "groups": ["finance"], "source": "api_key", "key_name": "alice-key"},
               "server": "demo", "method": "tools/call", "tool": "transfer", "rule_id": "big-transfers", "arguments_sha256": digest})
    );
    // Body callbacks that come while held stay held.
    assert_eq!(callback(&host, |h| ex.on_request_body(h, 10, true)), Step::Pause);
    // Another token is not this answer.
    callback(&host, |h| ex.on_http_call_response(h, 7, Ok((200, &br#"{"approved": true}"#[..]))));
    assert!(host.resumed.borrow().is_empty());

    *host.clock_nanos.borrow_mut() += 250 * 1_000_000;
    answer(&mut ex, &host, Ok((200, br#"{"approved": true, "approver": "carol", "reason": "expected"}"#)));

    assert_eq!(*host.resumed.borrow(), vec![Direction::Request]);
    assert!(host.local_reply.borrow().is_none());
    finish(&mut ex, &host);
    let rec = audit(&host);
    assert_eq!((rec["decision"].as_str(), rec["rule_id"].as_str(), rec["reason"].as_str()), (Some("allow"), Some("big-transfers"), Some("approved")));
    assert_eq!(rec["approval"], json!({"rule_id": "big-transfers", "asked": true, "approved": true, "approver": "carol", "reason": "expected", "status": 200, "latency_ms": 250}));
    assert_eq!(rec["is_error"], false, "the response was read as the call's");
    assert_eq!(host.metric("tollgate.mcp.approvals.server.demo.outcome.approved"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.transfer.caller.alice.decision.approved"), Some(1));
}

#[test]
fn no_is_a_refusal_never_forwarded_and_recorded_with_the_answer() {
    let shared = shared(json!({}));
    let host = request();
    let (mut ex, _) = post(&shared, &host, &transfer(json!(5000)));
    answer(&mut ex, &host, Ok((200, br#"{"approved": false, "approver": "carol", "reason": "not today"}"#)));

    assert!(host.resumed.borrow().is_empty());
    let (status, body) = reply_json(&host);
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -31403, "message": "Not approved: tools/call transfer",
               "data": {"rule_id": "big-transfers", "reason": "not approved", "approver": "carol", "approver_reason": "not today"}}})
    );
    let rec = audit(&host);
    assert_eq!((rec["decision"].as_str(), rec["status"].as_u64(), rec["reason"].as_str()), (Some("deny"), Some(403), Some("not approved")));
    assert_eq!(rec["approval"]["approved"], false);
    assert_eq!(rec["approval"]["approver"], "carol");
    assert_eq!(host.metric("tollgate.mcp.approvals.server.demo.outcome.denied"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.transfer.caller.alice.decision.not_approved"), Some(1));
}

#[test]
fn anything_but_an_explicit_yes_is_a_refusal() {
    type Said<'a> = Result<(u16, &'a [u8]), ()>;
    let cases: [(Said<'_>, u64, &str, Value); 5] = [
        (Err(()), 2000, "approval timed out", json!({"timeout": true})),
        (Ok((504, b"upstream request timeout")), 2001, "approval timed out", json!({"timeout": true, "status": 504})),
        (Err(()), 5, "approval service failed", json!({"timeout": null})),
        (Ok((500, br#"{"approved": true}"#)), 5, "approval service failed", json!({"status": 500})),
        (Ok((200, br#"{"approved": "yes"}"#)), 5, "approval service failed", json!({"status": 200})),
    ];
    for (said, after_ms, reason, fields) in cases {
        let shared = shared(json!({"policy": {"deny_style": "hide"}}));
        let host = request();
        let (mut ex, _) = post(&shared, &host, &transfer(json!(5000)));
        *host.clock_nanos.borrow_mut() += after_ms * 1_000_000;
        answer(&mut ex, &host, said);

        assert!(host.resumed.borrow().is_empty(), "{reason}");
        let (status, body) = reply_json(&host);
        assert_eq!(status, 403);
        // hide: the outcome only, no rule or approver.
        assert_eq!(body["error"]["data"], json!({"reason": reason}));
        let rec = audit(&host);
        assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("deny"), Some(reason)));
        for (k, v) in fields.as_object().unwrap() {
            assert_eq!(rec["approval"].get(k).cloned().unwrap_or(Value::Null), *v, "{reason}: {k} in {}", rec["approval"]);
        }
    }
}

#[test]
fn calls_no_approve_rule_matches_and_denied_calls_are_never_asked_about() {
    let shared = shared(json!({}));
    for (body, forwarded) in [(transfer(json!(50)), true), (transfer(json!("5000")).replace("acct-1", "mallory"), false)] {
        let host = request();
        let (_, step) = post(&shared, &host, &body);
        assert_eq!(step == Step::Continue, forwarded, "{body}");
        assert!(host.http_calls.borrow().is_empty(), "{body}");
    }
}

#[test]
fn arguments_are_sent_only_when_configured() {
    let shared = shared(json!({"approval": {"cluster": "approvals", "include_arguments": true}}));
    let host = request();
    let (_, step) = post(&shared, &host, &transfer(json!("X")).replace("\"X\"", "1e4"));
    assert_eq!(step, Step::Pause);
    let (headers, body) = asked(&host);
    assert!(headers.contains(&(":authority".to_string(), "approvals".to_string())));
    assert!(headers.contains(&(":path".to_string(), "/approve".to_string())));
    assert_eq!(body["arguments"], json!({"amount": 1e4, "to": "acct-1"}));
    assert_eq!(body["arguments_sha256"], sha256_hex(br#"{"amount":1e4,"to":"acct-1"}"#));
}

#[test]
fn an_approval_service_that_cannot_be_called_refuses_at_once() {
    let shared = shared(json!({}));
    let host = request();
    host.grpc_refused.set(true); // the test host's switch for refused callouts
    let (_, step) = post(&shared, &host, &transfer(json!(5000)));
    assert_eq!(step, Step::Pause);
    let (status, body) = reply_json(&host);
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (403, Some("approval service failed")));
    assert_eq!(audit(&host)["approval"]["error"], "cannot call the approval service: bad argument");
    assert_eq!(host.metric("tollgate.mcp.approvals.server.demo.outcome.error"), Some(1));
}

#[test]
fn a_batch_with_a_call_that_needs_approval_is_refused_whole_without_asking() {
    let shared = shared(json!({}));
    let host = request();
    host.request_headers.borrow_mut().push(("mcp-protocol-version".into(), "2025-03-26".into()));
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {}}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "transfer", "arguments": {"amount": 5000, "to": "x"}}},
    ]);
    let (_, step) = post(&shared, &host, &batch.to_string());
    assert_eq!(step, Step::Pause);
    assert!(host.http_calls.borrow().is_empty());
    let (status, body) = reply_json(&host);
    assert_eq!(status, 403);
    assert_eq!(body.as_array().map(Vec::len), Some(2));
    assert_eq!(body[0]["error"]["data"]["reason"], crate::approval::BATCH);
    assert_eq!(body[1]["error"]["data"], json!({"rule_id": "big-transfers", "reason": crate::approval::IN_BATCH}));
    let recs = audit(&host);
    assert_eq!(recs[0]["decision"], "deny");
    assert_eq!(recs[1]["decision"], "allow", "the notification");
    assert_eq!((recs[2]["decision"].as_str(), recs[2]["rule_id"].as_str()), (Some("deny"), Some("big-transfers")));
    assert_eq!(recs[2]["approval"], json!({"rule_id": "big-transfers", "asked": false}));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.transfer.caller.alice.decision.not_approved"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.caller.alice.decision.deny"), Some(1));
}

#[test]
fn dry_run_asks_nothing_and_records_that_approval_would_be_needed() {
    let shared = shared(json!({"policy": {"dry_run": true}}));
    let host = request();
    let (mut ex, step) = post(&shared, &host, &transfer(json!(5000)));
    assert_eq!(step, Step::Continue);
    assert!(host.http_calls.borrow().is_empty());
    finish(&mut ex, &host);
    let rec = audit(&host);
    assert_eq!((rec["decision"].as_str(), rec["enforced"].as_bool(), rec["rule_id"].as_str()), (Some("allow"), Some(false), Some("big-transfers")));
    assert_eq!(rec["approval"], json!({"rule_id": "big-transfers", "asked": false}));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.transfer.caller.alice.decision.dryrun_approval"), Some(1));
}

#[test]
fn a_call_over_a_rate_limit_is_refused_before_anyone_is_asked() {
    let shared = shared(json!({"rate_limits": [{"id": "one", "principals": ["*"], "max_calls": 1, "window_secs": 60, "per": "principal"}]}));
    let host = request();
    let (mut ex, step) = post(&shared, &host, &transfer(json!(5000)));
    assert_eq!(step, Step::Pause);
    answer(&mut ex, &host, Ok((200, br#"{"approved": true}"#)));
    assert_eq!(host.http_calls.borrow().len(), 1);

    // The same caller again (the filter removed the key from the first request's headers).
    host.request_headers.borrow_mut().push(("x-api-key".into(), ALICE.into()));
    let (_, step) = post(&shared, &host, &transfer(json!(5000)));
    assert_eq!(step, Step::Pause);
    assert_eq!(host.http_calls.borrow().len(), 1, "not asked again");
    let (status, body) = reply_json(&host);
    assert_eq!((status, body["error"]["code"].as_i64()), (429, Some(-31429)));
}

#[test]
fn a_client_that_leaves_before_the_answer_is_recorded_as_refused() {
    let shared = shared(json!({}));
    let host = request();
    let (mut ex, _) = post(&shared, &host, &transfer(json!(5000)));
    callback(&host, |h| ex.on_log(h));
    let rec = audit(&host);
    assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("deny"), Some("approval pending")));
    assert_eq!(rec["approval"], json!({"rule_id": "big-transfers", "asked": true}));
}

/// A `ShouldRateLimit` answer: OK, or over the limit.
fn store_answer(over: bool) -> Vec<u8> {
    use tollgate_core::wire::protobuf::Writer;
    let mut status = Writer::new();
    status.uint(1, if over { 2 } else { 1 });
    let mut w = Writer::new();
    w.uint(1, if over { 2 } else { 1 }).message(2, &status);
    w.finish()
}

#[test]
fn with_fleet_limits_the_store_counts_first_and_the_approver_is_asked_only_about_admitted_calls() {
    let shared = shared(json!({
        "store": {"cluster": "tollgate_limits", "timeout_ms": 100},
        "rate_limits": [{"id": "fleet", "principals": ["*"], "max_calls": 5, "window_secs": 60, "per": "principal"}],
    }));
    let host = request();
    let (mut ex, step) = post(&shared, &host, &transfer(json!(5000)));
    assert_eq!(step, Step::Pause, "held for the store");
    assert_eq!((host.grpc_calls.borrow().len(), host.http_calls.borrow().len()), (1, 0));

    callback(&host, |h| ex.on_grpc_response(h, 1, Ok(&store_answer(false))));
    assert!(host.resumed.borrow().is_empty(), "still held: now for the approval");
    assert_eq!(host.http_calls.borrow().len(), 1);
    answer(&mut ex, &host, Ok((200, br#"{"approved": true}"#)));
    assert_eq!(*host.resumed.borrow(), vec![Direction::Request]);

    // Over the fleet limit: refused with 429, the approver never asked.
    host.request_headers.borrow_mut().push(("x-api-key".into(), ALICE.into()));
    let (mut ex, _) = post(&shared, &host, &transfer(json!(5000)));
    callback(&host, |h| ex.on_grpc_response(h, 2, Ok(&store_answer(true))));
    assert_eq!(host.http_calls.borrow().len(), 1, "not asked");
    assert_eq!(reply_json(&host).0, 429);
}

use super::*;
use serde_json::{json, Value};
use tollgate_core::host::MemoryHost;
use tollgate_core::testing::{callback, drive_ending, Ending};
use tollgate_core::hash::sha256_hex;

const ALICE: &str = "tg-demo-alice";

fn shared(policy: Value) -> Rc<Shared> {
    shared_with(policy, json!([]))
}

fn shared_with(policy: Value, rate_limits: Value) -> Rc<Shared> {
    let mut cfg = json!({
        "rate_limits": rate_limits,
        "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
            {"sha256": sha256_hex(ALICE.as_bytes()), "name": "alice-key", "principal": "alice", "groups": ["eng"]}]}},
        "server": {"clusters": {"mcp_demo": "demo"}},
        "max_body_bytes": 1024,
        "max_sse_event_bytes": 4096,
    });
    if !policy.is_null() {
        cfg["policy"] = policy;
    }
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    Rc::new(Shared::build(config).unwrap())
}

fn demo_policy(extra: Value) -> Value {
    let mut p = json!({"rules": [
        {"id": "protocol", "effect": "allow", "principals": ["*"], "methods": ["initialize", "tools/list", "notifications/*"]},
        {"id": "basic", "effect": "allow", "principals": ["*"], "tools": ["add"]},
        {"id": "db", "effect": "allow", "principals": ["*"], "tools": ["query_db"], "arguments": [{"path": "$.table", "one_of": ["orders"]}]},
    ]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    p
}

fn request(method: &str, headers: &[(&str, &str)]) -> MemoryHost {
    let mut all = vec![(":method", method), ("content-type", "application/json"), ("x-api-key", ALICE)];
    all.retain(|(k, _)| !headers.iter().any(|(h, _)| h == k));
    all.extend_from_slice(headers);
    let host = MemoryHost::with_request_headers(&all);
    host.set_prop(&["xds", "cluster_name"], b"mcp_demo");
    host
}

/// Runs the request side; returns the exchange and what the filter answered.
fn post(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    assert_eq!(callback(host, |h| ex.on_request_headers(h, false)), Step::Pause);
    *host.request_body.borrow_mut() = body.as_bytes().to_vec();
    let step = callback(host, |h| ex.on_request_body(h, body.len(), true));
    (ex, step)
}

fn reply_json(host: &MemoryHost) -> (u32, Value) {
    let (status, _, body) = host.local_reply.borrow().clone().expect("a local reply");
    (status, serde_json::from_slice(&body).unwrap())
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
}

fn respond(ex: &mut Exchange, host: &MemoryHost, content_type: &str, chunks: &[&[u8]]) -> Vec<u8> {
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), content_type.into())];
    assert_eq!(ex.on_response_headers(host, false), Step::Continue);
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        host.response_body.borrow_mut().extend_from_slice(chunk);
        let size = host.response_body.borrow().len();
        if ex.on_response_body(host, size, last) == Step::Continue {
            out.append(&mut host.response_body.borrow_mut());
        }
    }
    out
}

#[test]
fn allowed_call_passes_with_trace_and_without_credentials() {
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
    let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"b":2,"a":1}}}"#);
    assert_eq!(step, Step::Continue);
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(host.request_header("x-api-key"), None);
    assert!(host.request_header("traceparent").unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    let out = respond(&mut ex, &host, "application/json", &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#]);
    assert!(out.ends_with(b"\"isError\":true}}"));
    let a = audit(&host);
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["rule_id"], "basic");
    assert_eq!(a["server"], "demo");
    assert_eq!(a["is_error"], true);
    assert_eq!(a["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(a["arguments_sha256"], sha256_hex(br#"{"a":1,"b":2}"#));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.caller.alice.decision.allow"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.requests"), Some(1));
}

#[test]
fn arguments_are_recorded_with_numbers_as_written() {
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"b":1e3,"a":1000.0000000000001}}}"#);
    respond(&mut ex, &host, "application/json", &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#]);
    assert_eq!(audit(&host)["arguments_sha256"], sha256_hex(br#"{"a":1000.0000000000001,"b":1e3}"#));
}

#[test]
fn arguments_are_judged_as_written() {
    // serde_json::Value (with its raw_value feature) reads an object whose first key is
    // its private RawValue token as the JSON in that key's string: a policy reading
    // Values would judge {"table":"orders"}, the server gets something else.
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"$serde_json::private::RawValue":"{\"table\":\"orders\"}"}}}"#;
    assert_eq!(post(&shared, &host, body).1, Step::Pause);
    assert_eq!(audit(&host)["decision"], "deny");
}

#[test]
fn denied_call_is_answered_locally() {
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let (_, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"query_db","arguments":{"table":"users"}}}"#);
    assert_eq!(step, Step::Pause);
    // query_db is listed to the caller (an argument-conditional rule allows it): the denial
    // says "not allowed", not "unknown" (`denials.rs`).
    let (status, body) = reply_json(&host);
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -31403, "message": "Not allowed: tools/call query_db with these arguments",
               "data": {"reason": "denied by policy"}}})
    );
    let a = audit(&host);
    assert_eq!((a["decision"].as_str(), a["enforced"].as_bool(), a["status"].as_u64()), (Some("deny"), Some(true), Some(403)));
    assert_eq!((a["rule_id"].as_str(), a["reason"].as_str()), (None, Some("no rule allows")));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.query_db.caller.alice.decision.deny"), Some(1));

    // A tool no rule shows the caller is still unknown, at the revision's status.
    let host = request("POST", &[]);
    post(&shared, &host, r#"{"jsonrpc":"2.0","id":"y","method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#);
    let (status, body) = reply_json(&host);
    assert_eq!((status, body["error"].clone()), (200, json!({"code": -32602, "message": "Unknown tool: admin_reset"})));
    assert_eq!(audit(&host)["status"], 200);
}

#[test]
fn dry_run_forwards_and_records() {
    let shared = shared(demo_policy(json!({"dry_run": true})));
    let host = request("POST", &[]);
    let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset"}}"#);
    assert_eq!(step, Step::Continue);
    ex.on_log(&host);
    let a = audit(&host);
    assert_eq!((a["decision"].as_str(), a["enforced"].as_bool()), (Some("deny"), Some(false)));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.admin_reset.caller.alice.decision.dryrun_deny"), Some(1));
}

#[test]
fn request_refusals() {
    let shared = shared(demo_policy(json!({})));
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u32, i64);
    let cases: &[Case<'_>] = &[
        (&[], "{", 400, -32700),
        (&[], r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"x"}"#, 400, -32600),
        (&[], r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, 200, 0),
        (&[("mcp-protocol-version", "2025-06-18")], r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, 400, -32600),
        (&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "echo")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#, 400, -32020),
        (&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "=?base64?YWRk?=")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#, 200, 0),
    ];
    for (headers, body, status, code) in cases {
        let host = request("POST", headers);
        let (_, step) = post(&shared, &host, body);
        if *code == 0 {
            assert_eq!(step, Step::Continue, "{body}");
            continue;
        }
        let (s, v) = reply_json(&host);
        assert_eq!((s, v["error"]["code"].as_i64()), (*status, Some(*code)), "{body}");
        assert_eq!(audit(&host)["decision"], "error");
    }
}

#[test]
fn an_unknown_revision_is_answered_with_32022_under_the_requests_id() {
    let shared = shared(Value::Null);
    for (body, id) in [
        (r#"{"jsonrpc":"2.0","id":"r7","method":"tools/call","params":{"name":"add"}}"#, json!("r7")),
        (r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, Value::Null),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Value::Null),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#, json!(1)),
    ] {
        let host = request("POST", &[("mcp-protocol-version", "v999.0.0")]);
        let (_, step) = post(&shared, &host, body);
        assert_eq!(step, Step::Pause, "{body}");
        let (s, v) = reply_json(&host);
        assert_eq!(s, 400, "{body}");
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32022, "message": "Unsupported protocol version",
                   "data": {"supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"],
                            "requested": "v999.0.0"}}}),
            "{body}"
        );
        let record = audit(&host);
        assert_eq!((record["decision"].as_str(), record["revision"].as_str()), (Some("error"), Some("v999.0.0")));
    }
    // Not JSON: the parse error, as from a server.
    let host = request("POST", &[("mcp-protocol-version", "v999.0.0")]);
    post(&shared, &host, "{");
    assert_eq!(reply_json(&host).1["error"]["code"], -32700);
}

#[test]
fn header_refusals() {
    let shared = shared(Value::Null);
    let check = |host: MemoryHost, status: u32| {
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
        assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(status));
    };
    check(request("POST", &[("content-type", "text/plain")]), 415);
    check(request("POST", &[("content-encoding", "gzip")]), 415);
    check(request("POST", &[("content-length", "1025")]), 413);
    check(request("GET", &[("mcp-protocol-version", "2030-01-01")]), 400);
    check(request("POST", &[("x-api-key", "wrong")]), 401);
    check(request("PUT", &[]), 405);
    check(request("GET", &[("mcp-protocol-version", "2026-07-28")]), 405);
    check(request("DELETE", &[("mcp-protocol-version", "2026-07-28")]), 405);
    // Streamed bodies are counted as they arrive.
    let host = request("POST", &[]);
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    assert_eq!(ex.on_request_body(&host, 1000, false), Step::Pause);
    assert_eq!(ex.on_request_body(&host, 1025, false), Step::Pause);
    assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(413));
}

#[test]
fn get_and_delete_need_an_identity_allowed_on_the_server() {
    let shared = shared(demo_policy(json!({"deny_style": "explain"})));
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&request("GET", &[]), true), Step::Continue);
    let anonymous = MemoryHost::with_request_headers(&[(":method", "DELETE")]);
    let mut ex = Exchange::new(shared, Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&anonymous, true), Step::Pause);
    assert_eq!(anonymous.local_reply.borrow().as_ref().map(|r| r.0), Some(403));
}

#[test]
fn server_name_sources() {
    let shared = shared(Value::Null);
    let name = |host: &MemoryHost| {
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        ex.on_request_headers(host, false);
        ex.server
    };
    let host = request("POST", &[]);
    assert_eq!(name(&host), "demo");
    host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "mcp_server"], b"billing");
    assert_eq!(name(&host), "billing");
    let host = request("POST", &[]);
    host.set_prop(&["xds", "cluster_name"], b"other_cluster");
    assert_eq!(name(&host), "other_cluster");
}

const SSE_LIST: &str = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\r\n\r\n\
event: message\r\nid: 9\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"add\"},{\"name\":\"admin_reset\"}],\"nextCursor\":\"c\"}}\r\n\r\n";

fn list_exchange(policy: Value) -> (Exchange, MemoryHost) {
    let shared = shared(policy);
    let host = request("POST", &[]);
    let (ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
    assert_eq!(step, Step::Continue);
    (ex, host)
}

#[test]
fn sse_list_rewritten_at_every_split() {
    let expected = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\r\n\r\n\
id: 9\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"add\"}],\"nextCursor\":\"c\"}}\r\n\r\n";
    let bytes = SSE_LIST.as_bytes();
    for split in 0..bytes.len() {
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let (a, b) = bytes.split_at(split);
        let out = respond(&mut ex, &host, "text/event-stream", &[a, b]);
        assert_eq!(String::from_utf8_lossy(&out), expected, "split at {split}");
        assert_eq!(host.response_header("cache-control").as_deref(), Some("private"));
        assert_eq!(audit(&host)["list_hidden"], 1);
    }
    let (mut ex, host) = list_exchange(demo_policy(json!({})));
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(String::from_utf8_lossy(&respond(&mut ex, &host, "text/event-stream", &bytewise)), expected);
}

#[test]
fn sse_list_behind_a_byte_order_mark_is_filtered() {
    let stream = format!("\u{FEFF}{SSE_LIST}");
    let bytes = stream.as_bytes();
    for split in [1, 2, 3, 4, 40] {
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let (a, b) = bytes.split_at(split);
        let out = String::from_utf8_lossy(&respond(&mut ex, &host, "text/event-stream", &[a, b])).into_owned();
        assert!(out.contains(r#""tools":[{"name":"add"}]"#) && !out.contains("admin_reset"), "split at {split}: {out}");
        assert_eq!(audit(&host)["list_hidden"], 1);
    }
}

#[test]
fn sse_passthrough_is_byte_exact_and_never_holds_a_finished_event() {
    let (mut ex, host) = list_exchange(Value::Null);
    let bytes = SSE_LIST.as_bytes();
    let first_end = SSE_LIST.find("\r\n\r\n").unwrap() + 4;
    let mut out = Vec::new();
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex.on_response_headers(&host, false);
    for (i, b) in bytes.iter().enumerate() {
        *host.response_body.borrow_mut() = vec![*b];
        ex.on_response_body(&host, 1, i + 1 == bytes.len());
        out.append(&mut host.response_body.borrow_mut());
        if i + 1 == first_end {
            // The first event, CRLF and all, is out as soon as its last byte arrived.
            assert_eq!(out, bytes[..first_end].to_vec());
        }
    }
    assert_eq!(out, bytes.to_vec());
}

#[test]
fn a_list_answering_a_post_of_notifications_never_passes() {
    // F3, then F6: a POST of only notifications asks nothing, so any response is dropped.
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(step, Step::Continue);
    let list = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}}"#;
    let (a, b) = list.split_at(20);
    let out = respond(&mut ex, &host, "application/json", &[a, b]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v["id"].clone(), v["error"]["code"].clone()), (Value::Null, json!(-32603)));
    let a = audit(&host);
    assert_eq!((a["kind"].as_str(), a["decision"].as_str()), (Some("notification"), Some("error")), "{a}");
    let sse = format!("data: {}\n\n", String::from_utf8_lossy(list));
    let host = request("POST", &[]);
    let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(step, Step::Continue);
    let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[sse.as_bytes()])).unwrap();
    assert_eq!(out, "");
}

/// F6 (found by fuzzing): the batch's first element is a notification (`kd`, not `id`), so
/// the POST asks only for `tools/call` 2; the server answers a batch whose first element is
/// a tools list under id 7. Never released: dropped from the batch (JSON, whatever the
/// chunking) or the stream (SSE), recorded.
const STRAY_BATCH: &str = r#"[{"jsonrpc":"2.0","kd":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/progress","params":{}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}]"#;
const STRAY_LIST: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a$d","inputSchema":{"type":"object"}},{"name":"admin_reset","x":[0,2]},{"name":"echo"}],"nextCursor":"abc","_meta":{"k":1}}}"#;
const CALL_ANSWER: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"3 rows"}],"isError":false}}"#;

#[test]
fn a_response_to_no_request_of_the_post_is_dropped_from_a_json_batch() {
    let shared = shared(demo_policy(json!({})));
    let body = format!("[{STRAY_LIST},{CALL_ANSWER}]");
    let bytes = body.as_bytes();
    for split in [1, 20, 60, bytes.len() - 1] {
        let host = request("POST", &[]);
        let (mut ex, step) = post(&shared, &host, STRAY_BATCH);
        assert_eq!(step, Step::Continue);
        let (a, b) = bytes.split_at(split);
        let out = String::from_utf8(respond(&mut ex, &host, "application/json", &[a, b])).unwrap();
        assert_eq!(out, format!("[{CALL_ANSWER}]"), "split at {split}");
        let records = audit(&host);
        // Recorded on the POST's request (batch index 2); the others untouched.
        assert_eq!(records[2]["decision"], "error");
        assert_eq!(records[2]["error"], "server response with id 7 answers no request of this POST: dropped");
        assert_eq!(records[2]["is_error"], false);
        assert_eq!((records[0]["decision"].as_str(), records[1]["decision"].as_str()), (Some("allow"), Some("allow")));
    }
    // A single JSON body answering another id: the request gets an error under its own id.
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, &ADD.replace(r#""id":7"#, r#""id":"c-3""#));
    let out = respond(&mut ex, &host, "application/json", &[STRAY_LIST.as_bytes()]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v["id"].clone(), v["error"]["code"].clone()), (json!("c-3"), json!(-32603)));
    assert_eq!(audit(&host)["decision"], "error");
    // Held until its end: a call's JSON answer is no longer released chunk by chunk.
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, ADD);
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    ex.on_response_headers(&host, false);
    *host.response_body.borrow_mut() = b"{\"jsonrpc\":".to_vec();
    assert_eq!(ex.on_response_body(&host, 11, false), Step::Pause);
}

#[test]
fn a_response_to_no_request_of_the_post_is_dropped_from_its_stream() {
    let shared = shared(demo_policy(json!({})));
    let stream = format!("id: 1\nevent: message\ndata: {STRAY_LIST}\n\nid: 2\nevent: message\ndata: {CALL_ANSWER}\n\n");
    let bytes = stream.as_bytes();
    for split in [0, 10, 100, bytes.len() - 3] {
        let host = request("POST", &[]);
        let (mut ex, _) = post(&shared, &host, STRAY_BATCH);
        let (a, b) = bytes.split_at(split);
        let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[a, b])).unwrap();
        assert_eq!(out, format!("id: 1\n\nid: 2\nevent: message\ndata: {CALL_ANSWER}\n\n"), "split at {split}");
        assert_eq!(audit(&host)[2]["decision"], "error");
    }
    // Dry run: passed, recorded.
    let shared = self::shared(demo_policy(json!({"dry_run": true})));
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, STRAY_BATCH);
    assert_eq!(respond(&mut ex, &host, "text/event-stream", &[bytes]), bytes.to_vec());
    let records = audit(&host);
    assert_eq!(records[2]["decision"], "allow");
    assert!(records[2]["error"].as_str().unwrap().contains("id 7"));
}

#[test]
fn a_get_stream_keeps_responses_filtering_lists_by_shape() {
    let shared = shared(demo_policy(json!({})));
    let host = request("GET", &[]);
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    assert_eq!(callback(&host, |h| ex.on_request_headers(h, true)), Step::Continue);
    let stream = format!("id: 1\ndata: {STRAY_LIST}\n\nid: 2\ndata: {CALL_ANSWER}\n\n");
    let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[stream.as_bytes()])).unwrap();
    assert!(!out.contains("admin_reset") && !out.contains("echo") && out.contains(CALL_ANSWER), "{out}");
    assert!(out.contains(r#""id":7,"result":{"tools":[],"nextCursor":"abc""#), "{out}");
}

#[test]
fn server_messages_repeating_a_key_never_pass() {
    // Clients keep the last `result`; the filter's reading refuses the repeated key.
    for body in [
        &br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[]},"result":{"tools":[{"name":"admin_reset"}]}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"id":5,"result":{"tools":[{"name":"admin_reset"}]}}"#,
    ] {
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let out = String::from_utf8(respond(&mut ex, &host, "application/json", &[body])).unwrap();
        assert!(!out.contains("admin_reset") && out.contains("-32603"), "{out}");
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let sse = format!("data: {}\n\n", String::from_utf8_lossy(body));
        let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[sse.as_bytes()])).unwrap();
        assert!(!out.contains("admin_reset") && out.contains("-32603"), "{out}");
    }
}

#[test]
fn json_list_is_buffered_and_rewritten() {
    let (mut ex, host) = list_exchange(demo_policy(json!({})));
    let body = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"admin_reset"},{"name":"add"}]}}"#;
    *host.response_headers.borrow_mut() = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), body.len().to_string()),
    ];
    ex.on_response_headers(&host, false);
    assert_eq!(host.response_header("content-length"), None);
    *host.response_body.borrow_mut() = body[..20].to_vec();
    assert_eq!(ex.on_response_body(&host, 20, false), Step::Pause);
    *host.response_body.borrow_mut() = body.to_vec();
    assert_eq!(ex.on_response_body(&host, body.len(), true), Step::Continue);
    assert_eq!(
        String::from_utf8(host.response_body.borrow().clone()).unwrap(),
        r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"add"}]}}"#
    );
}

#[test]
fn bodies_ending_with_trailers_are_judged_and_filtered() {
    // A denied call whose body ends with trailers is refused at the trailers.
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    let call = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"query_db","arguments":{"table":"users"}}}"#;
    let driven = drive_ending(&mut ex, &host, Some(call), &[], &[], Ending::Trailers);
    assert_eq!(driven.request_trailers, Some(Step::Pause));
    assert_eq!(reply_json(&host).1["error"]["message"], "Not allowed: tools/call query_db with these arguments");
    assert_eq!(audit(&host)["decision"], "deny");

    // A JSON tools/list answer that ends with trailers is filtered before it is released,
    // whether its last chunk was held or not.
    let list = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"admin_reset"},{"name":"add"}]}}"#;
    let (head, tail) = list.split_at(30);
    for chunks in [vec![&list[..]], vec![head, tail]] {
        let host = request("POST", &[]);
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        let json = [(":status", "200"), ("content-type", "application/json")];
        let driven =
            drive_ending(&mut ex, &host, Some(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#), &json, &chunks, Ending::Trailers);
        assert!(driven.response_body.iter().all(|s| *s == Step::Pause), "held until the end: {driven:?}");
        assert_eq!(driven.response_trailers, Some(Step::Continue));
        assert_eq!(
            String::from_utf8(host.response_body.borrow().clone()).unwrap(),
            r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"add"}]}}"#
        );
        assert_eq!(audit(&host)["list_hidden"], 1);
    }
}

#[test]
fn unreadable_lists_fail_closed() {
    // Compressed list response: status 502, body an error.
    let (mut ex, host) = list_exchange(demo_policy(json!({})));
    *host.response_headers.borrow_mut() = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("content-encoding".into(), "gzip".into()),
    ];
    ex.on_response_headers(&host, false);
    assert_eq!(host.response_header(":status").as_deref(), Some("502"));
    *host.response_body.borrow_mut() = b"\x1f\x8b binary".to_vec();
    ex.on_response_body(&host, 10, true);
    let v: Value = serde_json::from_slice(&host.response_body.borrow()).unwrap();
    assert_eq!(v["id"], 5);
    assert_eq!(v["error"]["code"], -32603);
    // A list result that is not a list.
    let (mut ex, host) = list_exchange(demo_policy(json!({})));
    let out = respond(&mut ex, &host, "application/json", &[br#"{"jsonrpc":"2.0","id":5,"result":{"tools":"add,admin_reset"}}"#]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["code"], -32603);
    // An SSE event larger than the limit ends the stream with an error.
    let (mut ex, host) = list_exchange(demo_policy(json!({})));
    let big = format!("data: {}\n\n", "x".repeat(5000));
    let out = respond(&mut ex, &host, "text/event-stream", &[big.as_bytes(), b"data: {}\n\n"]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("data: {\"jsonrpc\":\"2.0\",\"id\":5,\"error\""), "{text}");
    assert!(!text.contains("xxx"));
}

#[test]
fn list_answers_neither_json_nor_sse_never_pass() {
    let list = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}}"#;
    for content_type in ["text/plain", "application/octet-stream", "text/html; charset=utf-8", ""] {
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let out = respond(&mut ex, &host, content_type, &[&list[..10], &list[10..]]);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("admin_reset"), "{content_type}: {text}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["id"].as_i64(), v["error"]["code"].as_i64()), (Some(5), Some(-32603)), "{content_type}");
        assert_eq!(host.response_header(":status").as_deref(), Some("502"));
        assert_eq!(host.response_header("content-type").as_deref(), Some("application/json"));
        let a = audit(&host);
        assert_eq!((a["decision"].as_str(), a["status"].as_u64()), (Some("error"), Some(502)), "{a}");
        assert!(a["error"].as_str().unwrap().contains("cannot be filtered"), "{a}");
    }
    // An error status is kept (a client acts on it); its body is not passed either.
    let (mut ex, host) = list_exchange(demo_policy(json!({})));
    *host.response_headers.borrow_mut() = vec![(":status".into(), "404".into()), ("content-type".into(), "text/plain".into())];
    ex.on_response_headers(&host, false);
    *host.response_body.borrow_mut() = list.to_vec();
    ex.on_response_body(&host, list.len(), true);
    assert_eq!(host.response_header(":status").as_deref(), Some("404"));
    assert!(!String::from_utf8_lossy(&host.response_body.borrow()).contains("admin_reset"));
    // Not a list request: passes as before.
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{}}}"#);
    assert_eq!(respond(&mut ex, &host, "text/plain", &[b"hello"]), b"hello");
    assert_eq!(host.response_header(":status").as_deref(), Some("200"));
    // Dry run: recorded, passed.
    let (mut ex, host) = list_exchange(demo_policy(json!({"dry_run": true})));
    assert_eq!(respond(&mut ex, &host, "text/plain", &[list]), list);
    assert!(audit(&host)["error"].as_str().unwrap().contains("cannot be filtered"));
}

#[test]
fn batches_record_an_array() {
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let (_, step) = post(
        &shared,
        &host,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}]"#,
    );
    assert_eq!(step, Step::Pause);
    let (_, v) = reply_json(&host);
    assert_eq!(v[0]["error"]["message"], "Batch rejected");
    assert_eq!(v[1]["error"]["message"], "Unknown tool: nope");
    let a = audit(&host);
    assert_eq!(a.as_array().unwrap().len(), 2);
    assert_eq!(a[1]["batch_index"], 1);
}

#[test]
fn batches_with_duplicate_or_equivalent_request_ids_are_refused() {
    let shared = shared(demo_policy(json!({})));
    let list = |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
    let ping = |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize"}}"#);
    for (a, b) in [("1", "1"), ("1", "1.0"), ("1e0", "1"), ("-0", "0"), (r#""a""#, r#""\u0061""#)] {
        let host = request("POST", &[]);
        let (_, step) = post(&shared, &host, &format!("[{},{}]", ping(a), list(b)));
        assert_eq!(step, Step::Pause, "{a} {b}");
        let (status, v) = reply_json(&host);
        assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32600)), "{a} {b}");
        assert!(v["id"].is_null());
        let a = audit(&host);
        assert_eq!((a["decision"].as_str(), a["status"].as_u64()), (Some("error"), Some(400)));
    }
    // Different ids (a string is not a number), and responses/notifications, pass.
    for body in [
        format!("[{},{}]", ping("1"), list(r#""1""#)),
        format!("[{},{}]", ping("1"), list("2")),
        format!(r#"[{},{{"jsonrpc":"2.0","id":1,"result":{{}}}},{{"jsonrpc":"2.0","method":"notifications/initialized"}}]"#, list("1")),
    ] {
        let host = request("POST", &[]);
        assert_eq!(post(&shared, &host, &body).1, Step::Continue, "{body}");
    }
}

#[test]
fn responses_shaped_like_lists_are_filtered_whatever_request_their_id_names() {
    // The batch asked for tools/list (id 2) and a ping-like request (id 1); the server
    // answers the list under id 1 (`1.0`: a server that mixed the ids up): still filtered.
    let shared = shared(demo_policy(json!({})));
    let host = request("POST", &[]);
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"initialize"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    let (mut ex, step) = post(&shared, &host, body);
    assert_eq!(step, Step::Continue);
    let answer = br#"[{"jsonrpc":"2.0","id":1.0,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}},{"jsonrpc":"2.0","id":2,"result":{}}]"#;
    let out = respond(&mut ex, &host, "application/json", &[answer]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["result"]["tools"], json!([{"name": "add"}]));
    assert_eq!(v[0]["id"], 1.0);
    let a = audit(&host);
    assert_eq!(a[0]["list_hidden"], 1);
    // A single tools/call whose SSE answer is a tools list: filtered too.
    let host = request("POST", &[]);
    let (mut ex, step) = post(&shared, &host, ADD);
    assert_eq!(step, Step::Continue);
    let event = b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"admin_reset\"}]}}\n\n";
    let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[event])).unwrap();
    assert!(!out.contains("admin_reset"), "{out}");
    // Ordinary results of other requests are untouched and get no `list_hidden`.
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, ADD);
    let result = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"tools"}],"isError":false}}"#;
    assert_eq!(respond(&mut ex, &host, "application/json", &[result]), result.to_vec());
    ex.on_log(&host);
    assert!(audit(&host).get("list_hidden").is_none());
}

#[test]
fn null_request_ids_are_refused_and_never_forwarded() {
    let shared = shared(Value::Null);
    let null_call = r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
    for body in [null_call.to_string(), format!("[{ADD},{null_call}]")] {
        let host = request("POST", &[]);
        let (_, step) = post(&shared, &host, &body);
        assert_eq!(step, Step::Pause, "{body}");
        let (status, v) = reply_json(&host);
        assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32600)), "{body}");
        assert!(v["error"]["message"].as_str().unwrap().contains("must not be null"), "{v}");
        assert_eq!(audit(&host)["decision"], "error");
    }
    // A null id is still fine on an error response the client posts.
    let host = request("POST", &[]);
    let (_, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#);
    assert_eq!(step, Step::Continue);
}

#[test]
fn credential_headers_are_stripped_unless_forwarded() {
    let shared = shared(Value::Null);
    let host = request("POST", &[("authorization", "Bearer x"), ("x-goog-api-key", "k"), ("x-other", "kept")]);
    post(&shared, &host, ADD);
    assert_eq!(
        (host.request_header("x-api-key"), host.request_header("authorization"), host.request_header("x-goog-api-key")),
        (None, None, None)
    );
    assert_eq!(host.request_header("x-other").as_deref(), Some("kept"));
    let mut cfg: Config = tollgate_core::config::load(br#"{"forward_credentials": true, "identity": {"api_keys": {"headers": ["x-api-key"], "keys": []}}}"#).unwrap();
    cfg.server.clusters.insert("mcp_demo".into(), "demo".into());
    let shared = Rc::new(Shared::build(cfg).unwrap());
    let host = request("POST", &[("authorization", "Bearer x"), ("x-api-key", "unknown")]);
    let mut ex = Exchange::new(shared, Rc::new(Metrics::new()));
    ex.on_request_headers(&host, false);
    assert_eq!(host.request_header("authorization").as_deref(), Some("Bearer x"));
}

#[test]
fn tool_and_method_labels_are_capped_separately() {
    let shared = shared(Value::Null);
    let host = request("POST", &[]);
    let metrics = Rc::new(Metrics::new());
    let call = |host: &MemoryHost, tool: &str| {
        let mut ex = Exchange::new(shared.clone(), metrics.clone());
        ex.on_request_headers(host, false);
        let body = ADD.replace("\"add\"", &format!("\"{tool}\""));
        *host.request_body.borrow_mut() = body.as_bytes().to_vec();
        ex.on_request_body(host, body.len(), true);
    };
    for i in 0..MAX_LABEL_VALUES {
        call(&host, &format!("t{i}"));
    }
    call(&host, "one_too_many");
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.t255.caller.none.decision.allow"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.other.caller.none.decision.allow"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.one_too_many.caller.none.decision.allow"), None);
    // 257 tools did not use up the method labels: new methods still get their own.
    let mut ex = Exchange::new(shared.clone(), metrics.clone());
    ex.on_request_headers(&host, false);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"prompts/list"}"#;
    *host.request_body.borrow_mut() = body.as_bytes().to_vec();
    ex.on_request_body(&host, body.len(), true);
    assert_eq!(host.metric("tollgate.mcp.messages.server.demo.method.prompts_list.decision.allow"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.messages.server.demo.method.tools_call.decision.allow"), Some(257));
}

const BURST: &str = r#"[{"id": "burst", "max_calls": 2, "window_secs": 60, "per": "principal"}]"#;
const ADD: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#;

/// Posts again on the same host (same shared data and clock): the credentials the last
/// request had stripped are put back, the last local reply forgotten.
fn again(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
    *host.request_headers.borrow_mut() = request("POST", &[]).request_headers.borrow().clone();
    *host.local_reply.borrow_mut() = None;
    post(shared, host, body)
}

fn limited_shared(extra: Value) -> Rc<Shared> {
    shared_with(demo_policy(extra), serde_json::from_str(BURST).unwrap())
}

#[test]
fn rate_limited_call_gets_429_and_is_never_forwarded() {
    let shared = limited_shared(json!({}));
    let host = request("POST", &[]);
    *host.clock_nanos.borrow_mut() = 6_000_045 * 1_000_000_000; // 45 s into a window
    for _ in 0..2 {
        let (mut ex, step) = again(&shared, &host, ADD);
        assert_eq!(step, Step::Continue);
        ex.on_log(&host);
    }
    // Policy denials and other methods are not counted.
    let (_, step) = again(&shared, &host, r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"x"}}}"#);
    assert_eq!(step, Step::Pause);
    let (_, step) = again(&shared, &host, r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#);
    assert_eq!(step, Step::Continue);
    let (_, step) = again(&shared, &host, ADD);
    assert_eq!(step, Step::Pause);
    let (status, headers, body) = host.local_reply.borrow().clone().expect("a local reply");
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".to_string(), "15".to_string())), "{headers:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(body["error"]["code"], -31429);
    assert_eq!(body["error"]["data"], json!({"limit_id": "burst", "retry_after_secs": 15}));
    let a = audit(&host);
    assert_eq!((a["decision"].as_str(), a["enforced"].as_bool(), a["status"].as_u64()), (Some("deny"), Some(true), Some(429)));
    assert_eq!((a["rule_id"].as_str(), a["reason"].as_str(), a["tool"].as_str()), (Some("burst"), Some("rate_limited"), Some("add")));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.caller.alice.decision.rate_limited"), Some(1));
    assert_eq!(host.metric("tollgate.mcp.messages.server.demo.method.tools_call.decision.rate_limited"), Some(1));
    // The next window admits again.
    *host.clock_nanos.borrow_mut() = 6_000_060 * 1_000_000_000;
    let (_, step) = again(&shared, &host, ADD);
    assert_eq!(step, Step::Continue);
}

#[test]
fn rate_limited_batch_is_refused_whole_and_consumes_nothing() {
    let shared = limited_shared(json!({}));
    let host = request("POST", &[]);
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}},
        {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add"}},
        {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add"}}]"#;
    let (_, step) = again(&shared, &host, batch);
    assert_eq!(step, Step::Pause);
    let (status, v) = reply_json(&host);
    assert_eq!(status, 429);
    let errors: Vec<(i64, i64, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_i64().unwrap(), e["error"]["code"].as_i64().unwrap(), e["error"]["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [(1, -31429, "Rate limited: batch rejected"), (2, -31429, "Rate limited: batch rejected"), (3, -31429, "Rate limited: tools/call add (limit burst)")]
    );
    let a = audit(&host);
    let rows: Vec<(&str, &str)> = a.as_array().unwrap().iter().map(|r| (r["decision"].as_str().unwrap(), r["reason"].as_str().unwrap_or("-"))).collect();
    assert_eq!(rows, [("deny", "another message in the batch was rate limited"), ("allow", "-"), ("deny", "another message in the batch was rate limited"), ("deny", "rate_limited")]);
    // Nothing was forwarded, so nothing was counted: two single calls still pass.
    assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.mcp.rl.burst.alice", tollgate_core::shared_data::window::Window::fixed(60)), 0);
    for id in 10..12 {
        let (_, step) = again(&shared, &host, &ADD.replace("\"id\":7", &format!("\"id\":{id}")));
        assert_eq!(step, Step::Continue);
    }
}

#[test]
fn rate_limits_in_dry_run_record_but_forward() {
    let shared = limited_shared(json!({"dry_run": true}));
    let host = request("POST", &[]);
    for _ in 0..2 {
        assert_eq!(again(&shared, &host, ADD).1, Step::Continue);
    }
    let (mut ex, step) = again(&shared, &host, ADD);
    assert_eq!(step, Step::Continue);
    assert!(host.local_reply.borrow().is_none());
    ex.on_log(&host);
    let a = audit(&host);
    assert_eq!((a["decision"].as_str(), a["enforced"].as_bool()), (Some("deny"), Some(false)));
    assert_eq!((a["rule_id"].as_str(), a["reason"].as_str()), (Some("burst"), Some("rate_limited")));
    assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.caller.alice.decision.dryrun_rate_limited"), Some(1));
}

#[test]
fn rate_limits_without_a_policy() {
    let shared = shared_with(Value::Null, serde_json::from_str(BURST).unwrap());
    let host = request("POST", &[]);
    assert_eq!(again(&shared, &host, ADD).1, Step::Continue);
    assert_eq!(again(&shared, &host, ADD).1, Step::Continue);
    assert_eq!(again(&shared, &host, ADD).1, Step::Pause);
    assert_eq!(reply_json(&host).0, 429);
}

#[test]
fn bad_rate_limit_is_refused_at_load_with_the_field_named() {
    // What on_configure runs: the raw config, then its one compilation.
    let load_and_build = |cfg: &[u8]| tollgate_core::config::load::<Config>(cfg).and_then(Shared::build).err().map(|e| e.0).unwrap_or_default();
    let cfg = br#"{"rate_limits":[{"id":"a","max_calls":1,"window_secs":0,"per":"principal"}]}"#;
    let err = load_and_build(cfg);
    assert!(err.starts_with("rate_limits[0].window_secs:"), "{err}");
    let cfg = br#"{"rate_limits":[{"id":"a","max_calls":1,"window_secs":1,"per":"user"}]}"#;
    let err = load_and_build(cfg);
    assert!(err.starts_with("rate_limits[0].per:"), "{err}");
    let cfg = br#"{"rate_limits":[{"id":"a","max_calls":1,"window_secs":1,"per":"team","tool":["x"]}]}"#;
    let err = load_and_build(cfg);
    assert!(err.starts_with("rate_limits[0]") && err.contains("tool"), "{err}");
}
#[test]
fn a_tool_call_stays_within_its_host_call_budget() {
    // Each host call costs about 1-2 µs inside Envoy (bench/README.md): this pins what one
    // judged, audited tools/call with an argument rule spends (the `make bench` workload).
    let shared = shared(demo_policy(json!({})));
    let metrics = Rc::new(Metrics::new());
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"orders"}}}"#;
    let result = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3 rows"}],"isError":false}}"#;
    let warm = tollgate_core::testing::profile_rounds();
    for round in 0..warm + 2 {
        let host = request("POST", &[("mcp-protocol-version", "2025-06-18"), ("accept", "application/json, text/event-stream")]);
        host.quiet.set(round < warm);
        let mut ex = Exchange::new(shared.clone(), metrics.clone());
        let driven = tollgate_core::testing::drive(&mut ex, &host, Some(body), &[(":status", "200"), ("content-type", "application/json")], &[result]);
        assert_eq!(driven.request_body, Some(Step::Continue));
        assert!(host.local_reply.borrow().is_none());
        if round < warm {
            continue;
        }
        let calls = host.calls.borrow().clone();
        assert_eq!(host.calls_named("header"), 0, "{calls:#?}");
        assert!(host.calls_named("headers") <= 2, "{calls:#?}");
        // traceparent, the credential, cache-control; on the response the gateway's
        // x-request-id and traceparent (core observe::correlate).
        assert!(host.calls_named("set_header") + host.calls_named("set_headers") <= 5, "{calls:#?}");
        assert_eq!(host.calls_named("set_property"), 1, "one audit record: {calls:#?}");
        assert!(host.calls_named("random_bytes") <= 1, "{calls:#?}");
        // The first round also defines its metrics (once per VM). With a policy the JSON
        // answer is held and may be rewritten (a response to no request of the POST is
        // dropped): `cache-control: private` is one more host call than before (was 18).
        let budget = if round == 0 { 22 } else { 19 };
        assert!(calls.len() <= budget, "{} host calls: {calls:#?}", calls.len());
    }
}

// ---- Rate limits counted in the fleet-wide store: the call waits for its answer.

fn fleet_shared(on_failure: &str) -> Rc<Shared> {
    // The demo policy, and `echo` allowed too (the local limit's tool): otherwise the policy
    // refuses it before any limit is asked.
    let mut policy = demo_policy(json!({}));
    if let Some(rules) = policy["rules"].as_array_mut() {
        rules.push(json!({"id": "echo", "effect": "allow", "principals": ["*"], "tools": ["echo"]}));
    }
    let cfg = json!({
        "rate_limits": [
            {"id": "fleet-burst", "max_calls": 2, "window_secs": 60, "per": "principal", "on_store_failure": on_failure},
            {"id": "local-one", "max_calls": 1, "window_secs": 60, "per": "principal", "tools": ["echo"], "counters": "local"}
        ],
        "store": {"cluster": "tollgate_limits", "timeout_ms": 100},
        "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
            {"sha256": sha256_hex(ALICE.as_bytes()), "name": "alice-key", "principal": "alice", "groups": ["eng"]}]}},
        "server": {"clusters": {"mcp_demo": "demo"}},
        "policy": policy,
    });
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    Rc::new(Shared::build(config).unwrap())
}

fn store_answer(over: bool) -> Vec<u8> {
    use tollgate_core::wire::protobuf::Writer;
    let mut status = Writer::new();
    status.uint(1, if over { 2 } else { 1 });
    let mut reset = Writer::new();
    reset.uint(1, 33);
    status.message(4, &reset);
    let mut w = Writer::new();
    w.uint(1, if over { 2 } else { 1 }).message(2, &status);
    w.finish()
}

#[test]
fn a_fleet_rate_limit_holds_the_call_until_the_store_counts_it() {
    let shared = fleet_shared("fail_closed");
    let host = request("POST", &[]);
    let (mut ex, step) = post(&shared, &host, ADD);
    assert_eq!(step, Step::Pause, "held for the store");
    assert_eq!(host.grpc_calls.borrow().len(), 1);
    assert!(host.grpc_calls.borrow()[0].1.ends_with("/ShouldRateLimit"));
    callback(&host, |h| ex.on_grpc_response(h, 1, Ok(&store_answer(false))));
    assert_eq!(*host.resumed.borrow(), vec![Direction::Request]);
    assert!(host.local_reply.borrow().is_none());

    // The store says over: a 429 JSON-RPC error naming the limit, never forwarded.
    let (mut ex, _) = again(&shared, &host, ADD);
    callback(&host, |h| ex.on_grpc_response(h, 2, Ok(&store_answer(true))));
    assert_eq!(host.resumed.borrow().len(), 1, "not resumed again");
    let (status, headers, body) = host.local_reply.borrow().clone().expect("a local reply");
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".to_string(), "33".to_string())), "{headers:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["data"]["limit_id"], "fleet-burst");
}

#[test]
fn a_local_refusal_after_the_store_counted_gives_the_call_back() {
    let shared = fleet_shared("fail_closed");
    let host = request("POST", &[]);
    let echo = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let _ = tollgate_core::fleet::outbox::take();
    for token in 1..=2u32 {
        let (mut ex, step) = again(&shared, &host, echo);
        assert_eq!(step, Step::Pause, "call {token} held for the store");
        callback(&host, |h| ex.on_grpc_response(h, token, Ok(&store_answer(false))));
    }
    // The second was refused by the local limit after the store counted it: refunded.
    assert_eq!(reply_json(&host).0, 429);
    let (queued, _) = tollgate_core::fleet::outbox::take();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].method, "Settle");
}

#[test]
fn a_silent_store_refuses_or_counts_locally() {
    let failure = || Err(tollgate_core::stream::GrpcFailure { status: 4, message: "deadline exceeded".into() });
    let shared = fleet_shared("fail_closed");
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, ADD);
    callback(&host, |h| ex.on_grpc_response(h, 1, failure()));
    assert_eq!(reply_json(&host).0, 429);
    assert!(host.resumed.borrow().is_empty());

    let shared = fleet_shared("fail_open_local");
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, ADD);
    callback(&host, |h| ex.on_grpc_response(h, 1, failure()));
    assert_eq!(*host.resumed.borrow(), vec![Direction::Request]);
    ex.on_log(&host);
    assert_eq!(audit(&host)["limits_degraded"], true);
    assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.mcp.rl.fleet-burst.alice", tollgate_core::shared_data::window::Window::fixed(60)), 1);
}

#[test]
fn a_call_refused_by_the_local_fallback_counter_is_recorded_as_degraded() {
    // Seen through the real Envoy with the store down: the fail_open_local limit's third
    // call was refused by this Envoy's own counter, and its record did not say that the
    // decision came from the fallback counters.
    let failure = || Err(tollgate_core::stream::GrpcFailure { status: 14, message: "no healthy upstream".into() });
    let shared = fleet_shared("fail_open_local");
    let host = request("POST", &[]);
    for token in 1..=3u32 {
        let (mut ex, step) = again(&shared, &host, ADD);
        assert_eq!(step, Step::Pause, "held for the store");
        callback(&host, |h| ex.on_grpc_response(h, token, failure()));
        ex.on_log(&host);
        assert_eq!(audit(&host)["limits_degraded"], true, "call {token}");
    }
    assert_eq!(reply_json(&host).0, 429, "the local counter (2 calls) refused the third");
    assert_eq!(audit(&host)["rule_id"], "fleet-burst");
    assert_eq!(host.resumed.borrow().len(), 2);

    // A fail_closed limit refuses without counting anything here: not degraded.
    let shared = fleet_shared("fail_closed");
    let host = request("POST", &[]);
    let (mut ex, _) = post(&shared, &host, ADD);
    callback(&host, |h| ex.on_grpc_response(h, 1, failure()));
    assert_eq!(reply_json(&host).0, 429);
    assert!(audit(&host).get("limits_degraded").is_none(), "{}", audit(&host));
}

#[test]
fn a_store_call_the_host_refuses_to_send_is_a_store_failure_too() {
    // `dispatch_grpc` itself failing (e.g. the host refuses the call) is handled on the spot:
    // fail_open_local counts here and the record must say so, as when the store's answer fails.
    let shared = fleet_shared("fail_open_local");
    let host = request("POST", &[]);
    host.grpc_refused.set(true);
    let (mut ex, step) = post(&shared, &host, ADD);
    assert_eq!(step, Step::Continue, "not held: nothing was sent");
    assert!(host.local_reply.borrow().is_none());
    ex.on_log(&host);
    assert_eq!(audit(&host)["limits_degraded"], true, "{}", audit(&host));
    assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.mcp.rl.fleet-burst.alice", tollgate_core::shared_data::window::Window::fixed(60)), 1);

    let shared = fleet_shared("fail_closed");
    let host = request("POST", &[]);
    host.grpc_refused.set(true);
    let (_, _) = post(&shared, &host, ADD);
    assert_eq!(reply_json(&host).0, 429);
    assert!(audit(&host).get("limits_degraded").is_none());
}

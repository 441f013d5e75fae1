//! How responses are read, and server messages looked at, on plain values.

use super::*;
use crate::config::PolicyConfig;
use serde_json::{json, Value};
use tollgate_core::identity::{Identity, Source};

fn expect(id: &str, list: Option<ListKind>, record: usize) -> Expect {
    let raw: &RawValue = serde_json::from_str(id).unwrap();
    Expect { key: id_key(raw).into_owned(), list, record }
}

fn head<'a>(expect: &'a [Expect], content_type: &'a str) -> Head<'a> {
    Head { is_get: false, expect, policy: true, dry_run: false, content_type: Some(content_type), encoded: false, max_sse_event_bytes: 4096 }
}

fn kind(plan: Plan) -> &'static str {
    match plan {
        Plan::Pass => "pass",
        Plan::Unfilterable => "unfilterable",
        Plan::DropEncoded => "drop",
        Plan::Read { mode: ResponseMode::Sse(_), rewrite: true } => "sse rewrite",
        Plan::Read { mode: ResponseMode::Sse(_), rewrite: false } => "sse",
        Plan::Read { mode: ResponseMode::JsonBuffer, .. } => "json buffer",
        Plan::Read { mode: ResponseMode::JsonCopy { .. }, .. } => "json copy",
        Plan::Read { .. } => "other",
    }
}

#[test]
fn plans() {
    let list = [expect("1", Some(ListKind::Tools), 0)];
    let call = [expect("1", None, 0)];
    assert_eq!(kind(plan(&head(&list, "application/json"))), "json buffer");
    // With a policy, every JSON body is held: a response may answer no request of the POST,
    // and its id may come after its result.
    assert_eq!(kind(plan(&head(&call, "application/json"))), "json buffer");
    assert_eq!(kind(plan(&Head { policy: false, ..head(&call, "application/json") })), "json copy");
    assert_eq!(kind(plan(&Head { dry_run: true, ..head(&call, "application/json") })), "json copy");
    assert_eq!(kind(plan(&head(&call, "text/event-stream"))), "sse rewrite");
    assert_eq!(kind(plan(&head(&list, "text/plain"))), "unfilterable");
    assert_eq!(kind(plan(&head(&call, "text/plain"))), "pass");
    assert_eq!(kind(plan(&Head { encoded: true, ..head(&list, "application/json") })), "drop");
    assert_eq!(kind(plan(&Head { encoded: true, ..head(&call, "application/json") })), "drop");
    assert_eq!(kind(plan(&Head { encoded: true, policy: false, ..head(&call, "application/json") })), "pass");
    assert_eq!(kind(plan(&Head { dry_run: true, ..head(&list, "application/json") })), "json copy");
    assert_eq!(kind(plan(&Head { dry_run: true, ..head(&list, "text/event-stream") })), "sse");
    // Only notifications posted: nothing expected, read like a GET stream when lists are filtered.
    assert_eq!(kind(plan(&head(&[], "application/json"))), "json buffer");
    assert_eq!(kind(plan(&Head { policy: false, ..head(&[], "text/event-stream") })), "pass");
    assert_eq!(kind(plan(&Head { policy: false, ..head(&list, "application/json") })), "json copy");
}

#[test]
fn unfilterable_lists_are_recorded() {
    let expects = [expect("1", Some(ListKind::Tools), 0), expect("2", None, 1)];
    let mut records = vec![MessageRecord::new(Decision::Allow), MessageRecord::new(Decision::Allow)];
    let error = unfilterable(&expects, &mut records, Some("text/html"), false);
    assert_eq!(error, "list response with content type `text/html` cannot be filtered");
    assert_eq!((records[0].decision, records[0].error.as_deref()), (Decision::Error, Some(error.as_str())));
    assert_eq!((records[1].decision, records[1].error.as_deref()), (Decision::Allow, None));
    let mut records = vec![MessageRecord::new(Decision::Allow)];
    unfilterable(&expects, &mut records, None, true);
    assert_eq!(records[0].decision, Decision::Allow, "dry run: recorded only");
    assert!(records[0].error.is_some());
}

fn policy() -> Policy {
    let cfg: PolicyConfig = serde_json::from_value(json!({"rules": [
        {"id": "basic", "effect": "allow", "principals": ["*"], "tools": ["add"]},
    ]}))
    .unwrap();
    Policy::compile(&cfg, "policy").unwrap()
}

#[test]
fn the_reader_filters_lists_and_records_results() {
    let who = Identity {
        principal: "alice".into(),
        team: None,
        groups: Vec::new(),
        source: Source::Jwt,
        key_name: None,
        allowed_models: None,
        delegation: None,
    };
    let policy = policy();
    let expects = [expect("1", Some(ListKind::Tools), 0), expect("2", None, 1)];
    let mut records = vec![MessageRecord::new(Decision::Allow), MessageRecord::new(Decision::Allow)];
    records[1].detail.tool = Some("add".into());
    let mut reader = Reader {
        expect: &expects,
        records: &mut records,
        policy: Some(&policy),
        subject: Subject { identity: Some(&who), server: "demo" },
        router: None,
        held: true,
        post: true,
        pins: None,
    };
    let body = br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}},
                    {"jsonrpc":"2.0","id":2,"result":{"content":[],"isError":true}}]"#;
    let out: Value = serde_json::from_slice(&reader.inspect_json(body).unwrap()).unwrap();
    assert_eq!(out[0]["result"]["tools"], json!([{"name": "add"}]));
    assert_eq!(out[1]["result"]["isError"], true);
    assert_eq!(records[0].detail.list_hidden, Some(1));
    assert_eq!(records[1].detail.is_error, Some(true));
}

fn alice() -> Identity {
    Identity { principal: "alice".into(), team: None, groups: Vec::new(), source: Source::Jwt, key_name: None, allowed_models: None, delegation: None }
}

/// Reads `body` (JSON) as the response to a POST (or GET) that sent requests 1 (tools/list)
/// and 2 (tools/call add); returns what the client gets (None: unchanged) and the records.
fn read_json(body: &[u8], post: bool, dry_run: bool) -> (Option<String>, Vec<MessageRecord>) {
    let mut cfg: PolicyConfig = serde_json::from_value(json!({"rules": [
        {"id": "basic", "effect": "allow", "principals": ["*"], "tools": ["add"]},
    ]}))
    .unwrap();
    cfg.dry_run = dry_run;
    let policy = Policy::compile(&cfg, "policy").unwrap();
    let who = alice();
    let expects = [expect("1", Some(ListKind::Tools), 0), expect("2", None, 1)];
    let mut records = vec![MessageRecord::new(Decision::Allow), MessageRecord::new(Decision::Allow)];
    let mut reader = Reader {
        expect: &expects,
        records: &mut records,
        policy: Some(&policy),
        subject: Subject { identity: Some(&who), server: "demo" },
        router: None,
        held: true,
        post,
        pins: None,
    };
    let out = reader.inspect_json(body).map(|b| String::from_utf8(b).unwrap());
    (out, records)
}

const UNSOLICITED_LIST: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}}"#;

#[test]
fn responses_to_no_request_of_the_post_are_dropped_from_a_batch() {
    let answer = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#;
    let body = format!("[{UNSOLICITED_LIST},{answer}]");
    let (out, records) = read_json(body.as_bytes(), true, false);
    assert_eq!(out.as_deref(), Some(format!("[{answer}]").as_str()));
    assert_eq!(records[0].decision, Decision::Error);
    assert_eq!(records[0].error.as_deref(), Some("server response with id 7 answers no request of this POST: dropped"));
    assert_eq!(records[1].decision, Decision::Allow);
    // Any result, not only lists; ids compare by value (`2.0` is request 2); a string is not
    // a number; an absent id answers nothing.
    for unsolicited in [
        r#"{"jsonrpc":"2.0","id":"2","result":{"content":[]}}"#,
        r#"{"jsonrpc":"2.0","result":{"content":[]}}"#,
        r#"{"jsonrpc":"2.0","id":null,"result":{"tools":[]}}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"x"}}"#,
        // Read by the second (raw) reading: a result that is not an object.
        r#"{"jsonrpc":"2.0","id":3,"result":["admin_reset"]}"#,
    ] {
        let body = format!(r#"[{unsolicited},{{"jsonrpc":"2.0","id":2.0,"result":{{}}}}]"#);
        let (out, records) = read_json(body.as_bytes(), true, false);
        assert_eq!(out.as_deref(), Some(r#"[{"jsonrpc":"2.0","id":2.0,"result":{}}]"#), "{unsolicited}");
        assert!(records[0].error.as_deref().unwrap().contains("answers no request of this POST"), "{unsolicited}");
    }
    // Nothing left: the batch becomes one error (id null: the POST had two requests).
    let (out, _) = read_json(format!("[{UNSOLICITED_LIST}]").as_bytes(), true, false);
    let v: Value = serde_json::from_str(&out.unwrap()).unwrap();
    assert_eq!((v["id"].clone(), v["error"]["code"].clone()), (Value::Null, json!(-32603)));
    assert_eq!(v["error"]["message"], UNSOLICITED);
}

#[test]
fn what_is_not_a_stray_response_passes() {
    for body in [
        // Server requests and notifications.
        r#"[{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}},{"jsonrpc":"2.0","method":"notifications/message","params":{}}]"#,
        // JSON-RPC's error for an id the server could not read.
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"}}"#,
        // The answers asked for.
        r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"add"}]}},{"jsonrpc":"2.0","id":2,"result":{}}]"#,
    ] {
        let (out, records) = read_json(body.as_bytes(), true, false);
        assert_eq!(out, None, "{body}");
        assert!(records.iter().all(|r| r.error.is_none() && r.decision == Decision::Allow), "{body}");
    }
}

#[test]
fn a_single_stray_response_becomes_an_error_and_dry_run_only_records() {
    let (out, records) = read_json(UNSOLICITED_LIST.as_bytes(), true, false);
    let v: Value = serde_json::from_str(&out.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], -32603);
    assert_eq!(records[0].decision, Decision::Error);
    // Dry run: passed as it is, recorded with the error, the decision kept.
    let (out, records) = read_json(UNSOLICITED_LIST.as_bytes(), true, true);
    assert_eq!(out, None);
    assert_eq!(records[0].decision, Decision::Allow);
    assert!(records[0].error.is_some());
    // On a GET stream (replays of earlier POSTs' answers) the response is kept, its list
    // filtered by its shape.
    let (out, records) = read_json(UNSOLICITED_LIST.as_bytes(), false, false);
    let v: Value = serde_json::from_str(&out.unwrap()).unwrap();
    assert_eq!((v["id"].clone(), v["result"]["tools"].clone()), (json!(7), json!([{"name": "add"}])));
    assert!(records.iter().all(|r| r.error.is_none()));
}

#[test]
fn a_stray_response_is_removed_from_a_post_stream_keeping_its_event_id() {
    let policy = policy();
    let who = alice();
    let expects = [expect("2", None, 0)];
    let stream = format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{}}}}\n\n\
         id: e1\nevent: message\ndata: {UNSOLICITED_LIST}\n\n\
         data: {UNSOLICITED_LIST}\n\n\
         id: e3\r\ndata: {UNSOLICITED_LIST}\r\n\r\n\
         id: e4\ndata: {{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{\"content\":[]}}}}\n\n"
    );
    for post in [true, false] {
        let mut records = vec![MessageRecord::new(Decision::Allow)];
        let mut reader = Reader {
            expect: &expects,
            records: &mut records,
            policy: Some(&policy),
            subject: Subject { identity: Some(&who), server: "demo" },
            router: None,
            held: false,
            post,
            pins: None,
        };
        let mut parser = SseParser::new(4096).keeping_raw();
        let (out, readable) = reader.sse_chunk(&mut parser, stream.as_bytes());
        assert!(readable);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("admin_reset"), "{out}");
        if post {
            assert_eq!(
                out,
                "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n\
                 id: e1\n\n\
                 id: e3\r\n\r\
                 \nid: e4\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[]}}\n\n"
            );
            assert_eq!(records[0].decision, Decision::Error);
        } else {
            // GET: kept, filtered by shape.
            assert_eq!(out.matches(r#""tools":[{"name":"add"}]"#).count(), 3, "{out}");
            assert_eq!(records[0].decision, Decision::Allow);
        }
    }
}

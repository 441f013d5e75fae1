//! Bodies read and refused, without a host.

use super::*;
use serde_json::Value;

fn refused(body: &str, revision: Revision, unsupported: Option<&str>) -> (u32, Value, String) {
    let r = read(body.as_bytes(), revision, unsupported).unwrap_err();
    (r.reply.status, serde_json::from_slice(&r.reply.body).unwrap(), r.error)
}

#[test]
fn messages_are_read_in_order() {
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}},
                  {"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
    let read = read(body.as_bytes(), Revision::R2025_03_26, None).unwrap();
    assert!(read.batch);
    let kinds: Vec<Kind> = read.messages.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [Kind::Request, Kind::Notification]);
    assert_eq!(read.messages[0].target, message::Target::Tool("add".into()));

    let single = super::read(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, Revision::R2025_06_18, None).unwrap();
    assert!(!single.batch);
}

#[test]
fn what_is_refused_before_any_policy() {
    let (status, body, error) = refused("{", Revision::DEFAULT, None);
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(codes::PARSE_ERROR)));
    assert!(body["error"]["message"].as_str().unwrap().starts_with("Parse error: "));
    assert!(!error.is_empty());

    let (_, body, _) = refused(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#, Revision::DEFAULT, None);
    assert_eq!(body["error"]["code"].as_i64(), Some(codes::INVALID_REQUEST));

    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
    let (_, _, error) = refused(batch, Revision::R2025_06_18, None);
    assert_eq!(error, "JSON-RPC batches are not supported in MCP 2025-06-18");

    let twice = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1.0,"method":"ping"}]"#;
    let (_, _, error) = refused(twice, Revision::R2025_03_26, None);
    assert_eq!(error, "Invalid Request: duplicate request id 1.0 in batch");

    let (_, body, _) = refused(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#, Revision::DEFAULT, None);
    assert_eq!(body["id"], 7, "a message refused under its id");
}

#[test]
fn an_unsupported_revision_is_answered_under_the_request_id() {
    let (status, body, error) = refused(r#"{"jsonrpc":"2.0","id":"q","method":"ping"}"#, Revision::DEFAULT, Some("2099-01-01"));
    assert_eq!((status, body["id"].as_str()), (400, Some("q")));
    assert_eq!(body["error"]["code"].as_i64(), Some(codes::UNSUPPORTED_PROTOCOL_VERSION));
    assert_eq!(error, "unsupported MCP-Protocol-Version `2099-01-01`");
    let (_, body, _) = refused(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, Revision::DEFAULT, Some("x"));
    assert_eq!(body["id"], Value::Null);
}

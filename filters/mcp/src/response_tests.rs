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
    assert_eq!(kind(plan(&head(&call, "application/json"))), "json copy");
    assert_eq!(kind(plan(&head(&call, "text/event-stream"))), "sse rewrite");
    assert_eq!(kind(plan(&head(&list, "text/plain"))), "unfilterable");
    assert_eq!(kind(plan(&head(&call, "text/plain"))), "pass");
    assert_eq!(kind(plan(&Head { encoded: true, ..head(&list, "application/json") })), "drop");
    assert_eq!(kind(plan(&Head { encoded: true, ..head(&call, "application/json") })), "pass");
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
        held: true,
    };
    let body = br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}},
                    {"jsonrpc":"2.0","id":2,"result":{"content":[],"isError":true}}]"#;
    let out: Value = serde_json::from_slice(&reader.inspect_json(body).unwrap()).unwrap();
    assert_eq!(out[0]["result"]["tools"], json!([{"name": "add"}]));
    assert_eq!(out[1]["result"]["isError"], true);
    assert_eq!(records[0].detail.list_hidden, Some(1));
    assert_eq!(records[1].detail.is_error, Some(true));
}

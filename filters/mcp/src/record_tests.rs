//! Labels and the audit JSON of plain records.

use super::*;
use serde_json::Value;

fn facts(batch: bool) -> ExchangeFacts<'static> {
    ExchangeFacts {
        server: "demo",
        http_method: "POST",
        revision: "2025-06-18",
        session_id: Some("s-1"),
        envelope: Envelope { request_id: Some("r-1"), trace: None, identity: None },
        status: Some(200),
        start_ms: 1_000,
        batch,
        limits_degraded: false,
    }
}

fn records() -> Vec<MessageRecord> {
    let mut call = MessageRecord::new(Decision::Allow);
    call.rule_id = Some("basic".into());
    call.detail.kind = Some("request");
    call.detail.tool = Some("add".into());
    call.detail.is_error = Some(false);
    let mut note = MessageRecord::new(Decision::Deny);
    note.enforced = false;
    note.detail.kind = Some("notification");
    note.detail.reason = Some("no rule allows".into());
    vec![call, note]
}

#[test]
fn labels_name_the_decision_and_how_it_was_taken() {
    let mut r = MessageRecord::new(Decision::Deny);
    assert_eq!(r.label(), "deny");
    r.rate_limited = true;
    assert_eq!(r.label(), "rate_limited");
    r.enforced = false;
    assert_eq!(r.label(), "dryrun_rate_limited");
    r.rate_limited = false;
    assert_eq!(r.label(), "dryrun_deny");
    assert_eq!(MessageRecord::new(Decision::Allow).label(), "allow");
    assert_eq!(MessageRecord::new(Decision::Error).label(), "error");
}

#[test]
fn a_single_message_is_one_record() {
    let (out, errors) = serialize(&facts(false), &records(), 1_250);
    assert!(errors.is_empty());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["server"], "demo");
    assert_eq!(v["http_method"], "POST");
    assert_eq!(v["session_id"], "s-1");
    assert_eq!(v["request_id"], "r-1");
    assert_eq!(v["tool"], "add");
    assert_eq!(v["is_error"], false);
    assert_eq!(v["rule_id"], "basic");
    assert_eq!(v["status"], 200);
    assert_eq!(v["duration_ms"], 250);
    assert!(v.get("batch_index").is_none());
}

#[test]
fn a_batch_is_an_array_with_indexes() {
    let (out, errors) = serialize(&facts(true), &records(), 1_000);
    assert!(errors.is_empty());
    let v: Value = serde_json::from_slice(&out).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0]["batch_index"].as_u64(), all[0]["decision"].as_str()), (Some(0), Some("allow")));
    assert_eq!((all[1]["batch_index"].as_u64(), all[1]["decision"].as_str()), (Some(1), Some("deny")));
    assert_eq!((all[1]["enforced"].as_bool(), all[1]["reason"].as_str()), (Some(false), Some("no rule allows")));
}

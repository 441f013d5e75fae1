//! Violation bodies, per binding and dialect, on plain values.

use super::*;
use serde_json::Value;

fn call(binding: Option<Binding>, dialect: Dialect, rpc_id: Option<&RawValue>) -> Call<'_> {
    Call { binding, dialect, rpc_id, target: "agent-b", hop: Some(2), chain: &[], method: Some(Method::SendMessage) }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn json_rpc_errors_carry_the_id_and_an_error_info_in_the_dialect_shape() {
    let id = RawValue::from_string("\"r-1\"".into()).unwrap();
    let (status, body) = super::body(Refusal::Forbidden, &call(Some(Binding::JsonRpc), Dialect::V10, Some(&id)));
    let v = json(&body);
    assert_eq!((status, v["id"].as_str(), v["error"]["code"].as_i64()), (200, Some("r-1"), Some(codes::FORBIDDEN)));
    let info = &v["error"]["data"][0];
    assert_eq!((info["reason"].as_str(), info["domain"].as_str()), (Some("A2A_FORBIDDEN"), Some(ERROR_DOMAIN)));
    assert_eq!((info["metadata"]["target"].as_str(), info["metadata"]["hop"].as_str()), (Some("agent-b"), Some("2")));
    // 0.3: the ErrorInfo itself; no id read: null.
    let (_, body) = super::body(Refusal::Forbidden, &call(Some(Binding::JsonRpc), Dialect::V03, None));
    let v = json(&body);
    assert_eq!((v["id"].is_null(), v["error"]["data"]["reason"].as_str()), (true, Some("A2A_FORBIDDEN")));
}

#[test]
fn an_unknown_task_is_answered_as_the_agent_answers_it() {
    let (status, body) = super::body(Refusal::TaskNotFound, &call(Some(Binding::JsonRpc), Dialect::V03, None));
    let v = json(&body);
    assert_eq!((status, v["error"]["code"].as_i64(), v["error"]["message"].as_str()), (200, Some(-32001), Some("Task not found")));
    assert!(v["error"]["data"].is_null(), "0.3: data null");
    let (_, body) = super::body(Refusal::TaskNotFound, &call(Some(Binding::JsonRpc), Dialect::V10, None));
    let info = &json(&body)["error"]["data"][0];
    assert_eq!((info["reason"].as_str(), info["domain"].as_str()), (Some("TASK_NOT_FOUND"), Some("a2a-protocol.org")));
    assert_eq!(info["metadata"], serde_json::json!({}), "nothing says the gateway answered");
    let (status, body) = super::body(Refusal::TaskNotFound, &call(Some(Binding::Rest), Dialect::V10, None));
    assert_eq!((status, json(&body)["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
}

#[test]
fn rest_and_card_errors_use_http_statuses() {
    for (why, status, grpc) in [
        (Refusal::Delegation(Violation::Loop), 409, "ABORTED"),
        (Refusal::Delegation(Violation::MaxDepth), 400, "FAILED_PRECONDITION"),
        (Refusal::Unauthenticated, 401, "UNAUTHENTICATED"),
        (Refusal::HttpMethod, 405, "UNIMPLEMENTED"),
        (Refusal::Unfilterable, 502, "INTERNAL"),
    ] {
        for binding in [Some(Binding::Rest), Some(Binding::Card), None] {
            let (got, body) = super::body(why, &call(binding, Dialect::V10, None));
            let v = json(&body);
            assert_eq!((got, v["error"]["code"].as_u64(), v["error"]["status"].as_str()), (status, Some(u64::from(status)), Some(grpc)), "{why:?}");
            assert_eq!(v["error"]["details"][0]["reason"].as_str(), Some(why.reason()));
        }
    }
    assert_eq!(Refusal::HttpMethod.reply_headers(), &[("allow", "GET, POST, DELETE")]);
    assert!(Refusal::Forbidden.reply_headers().is_empty());
}

#[test]
fn policy_refusals_are_denials_and_unusable_requests_errors() {
    for why in [Refusal::Delegation(Violation::Loop), Refusal::Forbidden, Refusal::NotOriginator, Refusal::TaskNotFound] {
        assert!(!why.is_error(), "{why:?}");
    }
    for why in [Refusal::Unauthenticated, Refusal::TooLarge, Refusal::Parse, Refusal::Invalid, Refusal::Batch, Refusal::MediaType, Refusal::BadPath, Refusal::HttpMethod, Refusal::Unfilterable] {
        assert!(why.is_error(), "{why:?}");
    }
}

use super::*;

fn head(m: &str, p: &str, ct: Option<&str>) -> Head {
    classify_head(m, p, ct).unwrap()
}

#[test]
fn dialect_from_header() {
    assert_eq!(Dialect::from_header(None), Dialect::V03);
    assert_eq!(Dialect::from_header(Some("")), Dialect::V03);
    assert_eq!(Dialect::from_header(Some("0.3")), Dialect::V03);
    assert_eq!(Dialect::from_header(Some("1.0")), Dialect::V10);
    assert_eq!(Dialect::from_header(Some(" 1.1 ")), Dialect::V10);
    assert_eq!(Dialect::from_header(Some("2.0")), Dialect::V10);
}

#[test]
fn method_names_both_dialects() {
    assert_eq!(Method::from_name("message/send"), Some(Method::SendMessage));
    assert_eq!(Method::from_name("SendMessage"), Some(Method::SendMessage));
    assert_eq!(Method::from_name("message/stream").map(Method::name), Some("SendStreamingMessage"));
    assert_eq!(Method::from_name("tasks/resubscribe"), Some(Method::SubscribeToTask));
    assert_eq!(Method::from_name("agent/getAuthenticatedExtendedCard"), Some(Method::GetExtendedAgentCard));
    assert_eq!(Method::from_name("tools/call"), None);
    assert_eq!(Method::from_name(""), None);
    assert!(Method::SendStreamingMessage.streams());
    assert!(!Method::ListTasks.returns_task());
}

#[test]
fn cards() {
    assert_eq!(
        head("GET", "/agents/echo/.well-known/agent-card.json", None),
        Head::Card { legacy: false, prefix: "/agents/echo/".into() }
    );
    assert_eq!(
        head("GET", "/.well-known/agent-card.json?x=1", None),
        Head::Card { legacy: false, prefix: "/".into() }
    );
    assert_eq!(
        head("GET", "/a/.well-known/agent.json", None),
        Head::Card { legacy: true, prefix: "/a/".into() }
    );
    assert_eq!(head("POST", "/.well-known/agent-card.json", None), Head::Other);
}

#[test]
fn rest_paths_with_tenant_and_v1() {
    let rest = |m: &str, p: &str| match head(m, p, Some("application/a2a+json")) {
        Head::Rest { method, task_id, base, has_v1 } => Some((method, task_id, base, has_v1)),
        _ => None,
    };
    assert_eq!(rest("POST", "/message:send"), Some((Method::SendMessage, None, "/".into(), false)));
    assert_eq!(
        rest("POST", "/agents/echo/acme/message:stream"),
        Some((Method::SendStreamingMessage, None, "/agents/echo/acme/".into(), false))
    );
    assert_eq!(rest("GET", "/v1/tasks/t%2D1"), Some((Method::GetTask, Some("t-1".into()), "/v1/".into(), true)));
    assert_eq!(rest("GET", "/tasks?contextId=c"), Some((Method::ListTasks, None, "/".into(), false)));
    assert_eq!(rest("POST", "/t/tasks/abc:cancel"), Some((Method::CancelTask, Some("abc".into()), "/t/".into(), false)));
    assert_eq!(rest("GET", "/tasks/abc:subscribe").map(|r| r.0), Some(Method::SubscribeToTask));
    assert_eq!(
        rest("POST", "/tasks/abc/pushNotificationConfigs").map(|r| (r.0, r.1)),
        Some((Method::CreateTaskPushNotificationConfig, Some("abc".into())))
    );
    assert_eq!(
        rest("DELETE", "/tasks/abc/pushNotificationConfigs/c1").map(|r| (r.0, r.1)),
        Some((Method::DeleteTaskPushNotificationConfig, Some("abc".into())))
    );
    assert_eq!(rest("GET", "/extendedAgentCard").map(|r| r.0), Some(Method::GetExtendedAgentCard));
    assert_eq!(rest("GET", "/v1/card").map(|r| r.0), Some(Method::GetExtendedAgentCard));
    assert_eq!(rest("GET", "/card"), None);
    assert_eq!(rest("DELETE", "/tasks/abc"), None);
    assert_eq!(rest("POST", "/tasks/abc:frobnicate"), None);
    assert_eq!(rest("GET", "/tasks/"), None);
}

#[test]
fn only_the_http_methods_a2a_uses_are_allowed() {
    for m in ["GET", "POST", "DELETE", "get", "Post"] {
        assert!(http_method_allowed(m, true), "{m}");
        assert!(http_method_allowed(m, false), "{m}");
    }
    for m in ["HEAD", "OPTIONS"] {
        assert!(http_method_allowed(m, false), "{m} without a body");
        assert!(!http_method_allowed(m, true), "{m} with a body");
    }
    for m in ["PUT", "PATCH", "put", "patch", "CONNECT", "TRACE", "PROPFIND", "", "POST "] {
        assert!(!http_method_allowed(m, false), "{m:?}");
        assert!(!http_method_allowed(m, true), "{m:?}");
    }
}

#[test]
fn json_posts_and_other() {
    assert_eq!(head("POST", "/agents/echo/", Some("application/json")), Head::JsonPost);
    assert_eq!(head("POST", "/", Some("application/json; charset=utf-8")), Head::JsonPost);
    assert_eq!(head("POST", "/", Some("text/plain")), Head::Other);
    assert_eq!(head("POST", "/", None), Head::Other);
    assert_eq!(head("GET", "/agents/echo/", None), Head::Other);
}

#[test]
fn rpc_bodies() {
    let body = br#"{"jsonrpc":"2.0","id":"r1","method":"message/send","params":{"message":{}}}"#;
    let call = classify_rpc(body).unwrap();
    assert_eq!(call.method, Some(Method::SendMessage));
    assert_eq!(call.id.unwrap().get(), "\"r1\"");
    let other = classify_rpc(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#).unwrap();
    assert_eq!(other.method, None);
    assert_eq!(other.raw_method, "tools/call");
    assert!(matches!(classify_rpc(br#"[{"jsonrpc":"2.0","id":1,"method":"a"}]"#), Err(BodyClass::Batch)));
}

#[test]
fn unparseable_bodies_are_parse_errors_and_readable_ids_are_kept() {
    // Not JSON (or nothing at all): -32700, no id to answer with.
    for body in [&b"{nope"[..], b"", b"  \n", b"\xff\xfe{\x00}", br#"{"jsonrpc":"2.0","id":1"#] {
        assert!(matches!(classify_rpc(body), Err(BodyClass::Parse(_))), "{body:?}");
    }
    // JSON that is not a request: -32600, with the id when it is a string or a number.
    let id_of = |body: &[u8]| match classify_rpc(body) {
        Err(class @ (BodyClass::Invalid { .. } | BodyClass::Ambiguous { .. })) => class.into_id().map(|id| id.get().to_string()),
        other => panic!("{other:?}"),
    };
    assert_eq!(id_of(br#"{"jsonrpc":"1.0","id":"abc","method":"SendMessage"}"#).as_deref(), Some("\"abc\""));
    assert_eq!(id_of(br#"{"jsonrpc":"2.0","id":5,"params":{}}"#).as_deref(), Some("5"), "no method");
    assert_eq!(id_of(br#"{"jsonrpc":"2.0","id":-5,"method":7}"#).as_deref(), Some("-5"), "a method that is not a string");
    assert_eq!(id_of(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).as_deref(), Some("1"), "a response");
    assert_eq!(id_of(br#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#).as_deref(), Some("1"), "duplicate keys, one id");
    for body in [
        &br#"{"jsonrpc":"2.0","id":null,"method":"GetTask"}"#[..],
        br#"{"jsonrpc":"2.0","id":{"a":1},"method":"GetTask"}"#,
        br#"{"jsonrpc":"2.0","id":true,"method":"GetTask"}"#,
        br#"{"jsonrpc":"2.0","id":[1],"method":"GetTask"}"#,
        br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"GetTask"}"#,
        br#"{"jsonrpc":"1.0","method":"GetTask"}"#,
        b"42",
        b"[]",
    ] {
        assert_eq!(id_of(body), None, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn percent_encoded_paths_are_classified_decoded() {
    let rest = |m: &str, p: &str| match classify_head(m, p, None) {
        Ok(Head::Rest { method, task_id, base, .. }) => Ok(Some((method, task_id, base))),
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    assert_eq!(rest("POST", "/agents/echo/tasks/t%3Acancel"), Ok(Some((Method::CancelTask, Some("t".into()), "/agents/echo/".into()))));
    assert_eq!(rest("POST", "/tasks/t%3acancel?x=%2F"), Ok(Some((Method::CancelTask, Some("t".into()), "/".into()))));
    assert_eq!(rest("POST", "/%74asks/t:cancel"), Ok(Some((Method::CancelTask, Some("t".into()), "/".into()))));
    assert_eq!(rest("POST", "/message%3Asend").map(|r| r.map(|r| r.0)), Ok(Some(Method::SendMessage)));
    assert_eq!(rest("GET", "/tasks/%C3%BC").map(|r| r.and_then(|r| r.1)), Ok(Some("ü".into())));
    assert_eq!(rest("POST", "/tasks%2Ft:cancel"), Err(PathError::EncodedSeparator));
    assert_eq!(rest("POST", "/tasks/a%2fb:cancel"), Err(PathError::EncodedSeparator));
    assert_eq!(rest("GET", "/tasks/a%5Cb"), Err(PathError::EncodedSeparator));
    assert_eq!(rest("GET", "/tasks/a%3fb"), Err(PathError::EncodedSeparator));
    assert_eq!(rest("GET", "/tasks/a%23b"), Err(PathError::EncodedSeparator));
    assert_eq!(rest("GET", "/tasks/a\u{1}b"), Err(PathError::BadEscape), "unescaped control characters too");
    assert_eq!(rest("delete", "/tasks/t/pushNotificationConfigs/c"), Ok(Some((Method::DeleteTaskPushNotificationConfig, Some("t".into()), "/".into()))));
    assert_eq!(rest("PUT", "/tasks/t"), Ok(None));
    assert_eq!(rest("POST", "/tasks/t%3:cancel"), Err(PathError::BadEscape));
    assert_eq!(rest("POST", "/tasks/t%0Acancel"), Err(PathError::BadEscape));
    assert_eq!(rest("GET", "/tasks/%FF"), Err(PathError::BadEscape));
    // A decoded prefix goes back into card URLs encoded.
    assert_eq!(
        classify_head("GET", "/agents/a%20b/.well-known/agent-card.json", None),
        Ok(Head::Card { legacy: false, prefix: "/agents/a%20b/".into() })
    );
    assert_eq!(
        classify_head("GET", "/agents/echo/%2Ewell-known/agent-card.json", None),
        Ok(Head::Card { legacy: false, prefix: "/agents/echo/".into() })
    );
    assert_eq!(encode_path("/a b/ü/x:y@z/"), "/a%20b/%C3%BC/x:y@z/");
    // The hand-written encoder this replaced, as the reference.
    let reference = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let all: String = (0u8..=127).map(char::from).collect();
    for s in ["/agents/echo/", "/a b/?#%[]/", "mod\u{e8}le \u{1f600}", all.as_str()] {
        assert_eq!(encode_path(s), reference(s), "{s:?}");
    }
}

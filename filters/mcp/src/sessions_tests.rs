use super::*;
use tollgate_core::config::load;
use tollgate_core::host::MemoryHost;
use tollgate_core::identity::Source;

fn key() -> HmacKey {
    HmacKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn who(principal: &str) -> Identity {
    Identity {
        principal: principal.into(),
        team: None,
        groups: Vec::new(),
        source: Source::ApiKey,
        key_name: None,
        allowed_models: None,
        delegation: None,
    }
}

#[test]
fn a_bound_id_verifies_for_its_caller_and_server_only() {
    let alice = who("alice");
    let id = bind(&key(), "db", Some(&alice), "c0ffee").unwrap();
    assert!(id.starts_with("c0ffee."), "{id}");
    assert_eq!(id.len(), "c0ffee.".len() + 32);
    assert!(is_valid_id(&id));
    assert_eq!(verify(&key(), "db", Some(&alice), &id), Ok("c0ffee"));
    // Another principal, anonymous, another server, another key.
    assert_eq!(verify(&key(), "db", Some(&who("bob")), &id), Err(Mismatch::WrongBinding));
    assert_eq!(verify(&key(), "db", None, &id), Err(Mismatch::WrongBinding));
    assert_eq!(verify(&key(), "files", Some(&alice), &id), Err(Mismatch::WrongBinding));
    let other = HmacKey::new(b"another key of thirty-two bytes!").unwrap();
    assert_eq!(verify(&other, "db", Some(&alice), &id), Err(Mismatch::WrongBinding));
    // The same tag on another server id.
    let (_, tag) = id.rsplit_once('.').unwrap();
    assert_eq!(verify(&key(), "db", Some(&alice), &format!("c0ffef.{tag}")), Err(Mismatch::WrongBinding));
}

#[test]
fn anonymous_is_a_principal_of_its_own() {
    let id = bind(&key(), "db", None, "s1").unwrap();
    assert_eq!(verify(&key(), "db", None, &id), Ok("s1"));
    // Not the empty principal.
    assert_eq!(verify(&key(), "db", Some(&who("")), &id), Err(Mismatch::WrongBinding));
}

#[test]
fn framing_is_unambiguous() {
    // Moving bytes between server, principal and id changes the message.
    let a = message("ab", Some("c"), "d");
    let b = message("a", Some("bc"), "d");
    let c = message("a", Some("b"), "cd");
    assert_ne!(a, b);
    assert_ne!(b, c);
    assert_ne!(message("a", None, "b"), message("a", Some(""), "b"));
    let id = bind(&key(), "ab", Some(&who("c")), "d").unwrap();
    assert_eq!(verify(&key(), "a", Some(&who("bc")), &id), Err(Mismatch::WrongBinding));
}

#[test]
fn raw_malformed_and_tampered_ids_are_refused() {
    let alice = who("alice");
    assert_eq!(verify(&key(), "db", Some(&alice), "c0ffee"), Err(Mismatch::Untagged));
    assert_eq!(verify(&key(), "db", Some(&alice), "a.b.c"), Err(Mismatch::Untagged));
    assert_eq!(verify(&key(), "db", Some(&alice), "bad id.00"), Err(Mismatch::Malformed));
    assert_eq!(verify(&key(), "db", Some(&alice), ""), Err(Mismatch::Malformed));
    let id = bind(&key(), "db", Some(&alice), "s").unwrap();
    assert_eq!(verify(&key(), "db", Some(&alice), &id.to_uppercase().replace("S.", "s.")), Err(Mismatch::Untagged));
    let mut flipped = id.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    assert_eq!(verify(&key(), "db", Some(&alice), &flipped), Err(Mismatch::WrongBinding));
    assert_eq!(verify(&key(), "db", Some(&alice), &format!(".{}", id.rsplit_once('.').unwrap().1)), Err(Mismatch::Malformed));
    // Server ids that hold dots bind and verify (the tag is the last part).
    let dotted = bind(&key(), "db", Some(&alice), "v1.abc.def").unwrap();
    assert_eq!(verify(&key(), "db", Some(&alice), &dotted), Ok("v1.abc.def"));
    assert_eq!(server_part(&dotted), "v1.abc.def");
}

#[test]
fn server_ids_the_spec_does_not_allow_are_not_bound() {
    assert_eq!(bind(&key(), "db", None, "a b"), None);
    assert_eq!(bind(&key(), "db", None, ""), None);
    assert_eq!(bind(&key(), "db", None, &"x".repeat(MAX_SERVER_ID + 1)), None);
    assert!(bind(&key(), "db", None, &"x".repeat(MAX_SERVER_ID)).is_some());
}

#[test]
fn config_defaults_on_and_refuses_short_keys_naming_the_field() {
    let c: SessionsConfig = serde_json::from_str("{}").unwrap();
    assert!(matches!(Binding::compile(&c, "sessions").unwrap(), Binding::PerEnvoy));
    let c: SessionsConfig = serde_json::from_str(r#"{"bind":false}"#).unwrap();
    assert!(matches!(Binding::compile(&c, "sessions").unwrap(), Binding::Off));
    let c: SessionsConfig = serde_json::from_str(r#"{"binding_key":"short"}"#).unwrap();
    let err = Binding::compile(&c, "sessions").unwrap_err();
    assert!(err.0.starts_with("sessions.binding_key:"), "{err}");
    let c: SessionsConfig = serde_json::from_str(r#"{"bind":false,"binding_key":"0123456789abcdef0123456789abcdef"}"#).unwrap();
    assert!(Binding::compile(&c, "sessions").unwrap_err().0.starts_with("sessions.binding_key:"));
    let err = load::<crate::config::Config>(br#"{"sessions":{"key":"x"}}"#).unwrap_err();
    assert!(err.0.starts_with("sessions"), "{err}");
    assert!(err.0.contains("key"), "{err}");
}

#[test]
fn the_per_envoy_key_is_created_once_and_shared() {
    let host = MemoryHost::new();
    let a = envoy_key(&host).unwrap();
    let stored = host.shared_data(ENVOY_KEY_NAME).unwrap().0.unwrap();
    assert_eq!(stored.len(), MIN_KEY_BYTES);
    // Another worker (same shared data) signs with the same key.
    let b = envoy_key(&host).unwrap();
    let id = bind(&a, "db", None, "s").unwrap();
    assert_eq!(verify(&b, "db", None, &id), Ok("s"));
    assert_eq!(host.shared_data(ENVOY_KEY_NAME).unwrap().0.unwrap(), stored);
}

#[test]
fn admit_and_issue_decide_from_the_headers() {
    let host = MemoryHost::new();
    let binding = Binding::Key(key());
    let alice = who("alice");
    assert_eq!(admit(&host, &binding, "db", Some(&alice), None), Admit::Pass);
    let Issue::Bound { client_id, server_id } = issue(&host, &binding, "db", Some(&alice), Some("s1")) else { panic!() };
    assert_eq!(server_id, "s1");
    assert_eq!(admit(&host, &binding, "db", Some(&alice), Some(&client_id)), Admit::Forward("s1".into()));
    let refused = admit(&host, &binding, "db", Some(&who("bob")), Some(&client_id));
    assert_eq!(
        refused,
        Admit::Refuse { server_id: Some("s1".into()), why: Mismatch::WrongBinding.as_str().into(), label: "wrong_binding" }
    );
    assert!(matches!(admit(&host, &binding, "db", Some(&alice), Some("s1")), Admit::Refuse { label: "untagged", .. }));
    assert!(matches!(issue(&host, &binding, "db", None, Some("a b")), Issue::Strip { .. }));
    assert_eq!(admit(&host, &Binding::Off, "db", None, Some("raw")), Admit::Pass);
    assert_eq!(issue(&host, &Binding::Off, "db", None, Some("raw")), Issue::Pass);
}

#[test]
fn the_refusal_is_the_sdk_servers_unknown_session_answer() {
    let r = not_found();
    assert_eq!(r.status, 404);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Session not found"}}));
}

/// Whole exchanges through the filter against `MemoryHost`.
mod exchanges {
    use super::*;
    use crate::config::Config;
    use crate::exchange::{Exchange, Shared};
    use serde_json::{json, Value};
    use std::rc::Rc;
    use tollgate_core::hash::sha256_hex;
    use tollgate_core::observe::metrics::Metrics;
    use tollgate_core::testing::drive;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn shared(sessions: Value) -> Rc<Shared> {
        let cfg = json!({
            "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
                {"sha256": sha256_hex(b"alice-key"), "name": "a", "principal": "alice"},
                {"sha256": sha256_hex(b"bob-key"), "name": "b", "principal": "bob"}]}},
            "server": {"clusters": {"mcp_db": "db", "mcp_files": "files"}},
            "sessions": sessions,
        });
        let config: Config = load(cfg.to_string().as_bytes()).unwrap();
        Rc::new(Shared::build(config).unwrap())
    }

    fn host(method: &str, api_key: &str, cluster: &str, session: Option<&str>) -> MemoryHost {
        let mut headers = vec![(":method", method), ("content-type", "application/json"), ("x-api-key", api_key)];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
        }
        let host = MemoryHost::with_request_headers(&headers);
        host.set_prop(&["xds", "cluster_name"], cluster.as_bytes());
        host
    }

    fn audit(host: &MemoryHost) -> Value {
        serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
    }

    /// Alice initializes on `db`: the id she gets back.
    fn initialize(shared: &Rc<Shared>, h: &MemoryHost) -> String {
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        let result = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        drive(&mut ex, h, Some(body), &[(":status", "200"), ("content-type", "application/json"), ("mcp-session-id", "srv-1")], &[result]);
        let id = h.response_headers.borrow().iter().find(|(k, _)| k == "mcp-session-id").map(|(_, v)| v.clone()).unwrap();
        assert_eq!(audit(h)["session_id"], "srv-1");
        id
    }

    fn list(shared: &Rc<Shared>, h: &MemoryHost) {
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        let body = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        let result = br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#;
        drive(&mut ex, h, Some(body), &[(":status", "200"), ("content-type", "application/json")], &[result]);
    }

    fn request_session(h: &MemoryHost) -> Option<String> {
        h.request_headers.borrow().iter().find(|(k, _)| k == "mcp-session-id").map(|(_, v)| v.clone())
    }

    #[test]
    fn the_issued_id_is_bound_and_the_server_gets_its_own_back() {
        let shared = shared(json!({"binding_key": KEY}));
        let init = host("POST", "alice-key", "mcp_db", None);
        let id = initialize(&shared, &init);
        assert!(id.starts_with("srv-1.") && id.len() == "srv-1.".len() + 32, "{id}");

        let h = host("POST", "alice-key", "mcp_db", Some(&id));
        list(&shared, &h);
        assert!(h.local_reply.borrow().is_none());
        assert_eq!(request_session(&h).as_deref(), Some("srv-1"));
        assert_eq!(audit(&h)["session_id"], "srv-1");
        assert_eq!(audit(&h)["decision"], "allow");

        for method in ["GET", "DELETE"] {
            let h = host(method, "alice-key", "mcp_db", Some(&id));
            let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
            drive(&mut ex, &h, None, &[(":status", "200")], &[]);
            assert!(h.local_reply.borrow().is_none(), "{method}");
            assert_eq!(request_session(&h).as_deref(), Some("srv-1"), "{method}");
        }
    }

    #[test]
    fn another_caller_another_server_or_a_raw_id_gets_404_never_forwarded() {
        let shared = shared(json!({"binding_key": KEY}));
        let id = initialize(&shared, &host("POST", "alice-key", "mcp_db", None));
        let cases = [
            ("bob-key", "mcp_db", id.clone(), "wrong_binding"),
            ("alice-key", "mcp_files", id.clone(), "wrong_binding"),
            ("alice-key", "mcp_db", "srv-1".to_string(), "untagged"),
        ];
        for (key, cluster, presented, why) in cases {
            for method in ["POST", "GET", "DELETE"] {
                let h = host(method, key, cluster, Some(&presented));
                let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
                let body = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
                let driven = drive(&mut ex, &h, (method == "POST").then_some(&body[..]), &[(":status", "200")], &[]);
                assert!(driven.response_headers.is_none(), "{key} {cluster} {method}: forwarded");
                let (status, _, reply) = h.local_reply.borrow().clone().expect("a local reply");
                assert_eq!(status, 404);
                let reply: Value = serde_json::from_slice(&reply).unwrap();
                assert_eq!(reply["error"]["message"], "Session not found");
                let rec = audit(&h);
                assert_eq!(rec["decision"], "deny", "{rec}");
                assert_eq!(rec["reason"], REASON);
                assert_eq!(rec["session_id"], "srv-1");
                assert_eq!(rec["status"], 404);
                let server = if cluster == "mcp_db" { "db" } else { "files" };
                let metric = format!("tollgate.mcp.session_refused.server.{server}.why.{why}");
                assert_eq!(h.metric(&metric), Some(1), "{metric}");
            }
        }
    }

    #[test]
    fn without_a_key_every_worker_binds_with_the_envoys_own() {
        let shared_a = shared(json!({}));
        let shared_b = shared(json!({}));
        let h = host("POST", "alice-key", "mcp_db", None);
        let id = initialize(&shared_a, &h);
        // Another worker: its own `Shared`, the same shared data.
        let h2 = host("POST", "alice-key", "mcp_db", Some(&id));
        *h2.shared.borrow_mut() = h.shared.borrow().clone();
        list(&shared_b, &h2);
        assert_eq!(request_session(&h2).as_deref(), Some("srv-1"));
    }

    #[test]
    fn bind_false_passes_ids_untouched() {
        let shared = shared(json!({"bind": false}));
        let h = host("POST", "alice-key", "mcp_db", None);
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        drive(&mut ex, &h, Some(body), &[(":status", "200"), ("content-type", "application/json"), ("mcp-session-id", "srv-1")], &[b"{}"]);
        assert!(h.response_headers.borrow().contains(&("mcp-session-id".into(), "srv-1".into())));
        let h = host("POST", "bob-key", "mcp_db", Some("srv-1"));
        list(&shared, &h);
        assert_eq!(request_session(&h).as_deref(), Some("srv-1"));
    }
}

use crate::config::Config;
use crate::exchange::{Exchange, Shared};
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::host::{Direction, MemoryHost};
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::testing::callback;

const JWT_NS: &str = "envoy.filters.http.jwt_authn";

fn shared(extra: Value) -> Rc<Shared> {
    let mut cfg = json!({
        "identity": {"jwt": {"payload_key": "payload"}},
        "require_identity": true,
        "server": {"clusters": {"mcp_billing": "billing", "mcp_demo": "demo"}},
        "oauth": {"resource": "https://gw.example/mcp", "authorization_servers": ["https://as.example"],
                  "jwt_failed_status_key": "jwt_failure"},
        "token_exchange": {"cluster": "oauth_as", "authority": "as.example", "client_id": "gw", "client_secret": "pw",
                           "servers": {"billing": {"audience": "billing-mcp"}}},
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            cfg[k] = v;
        }
    }
    let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
    Rc::new(Shared::build(config).unwrap())
}

fn host(method: &str, path: &str, cluster: &str, token: Option<&str>, sub: Option<&str>) -> MemoryHost {
    let mut headers = vec![(":method", method), (":path", path), ("content-type", "application/json")];
    let auth = token.map(|t| format!("Bearer {t}"));
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let host = MemoryHost::with_request_headers(&headers);
    host.set_prop(&["xds", "cluster_name"], cluster.as_bytes());
    if let Some(sub) = sub {
        host.set_prop(&["metadata", "filter_metadata", JWT_NS, "payload", "sub"], sub.as_bytes());
    }
    host
}

fn post(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
    let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
    let step = callback(host, |h| ex.on_request_headers(h, false));
    if step == Step::Pause && host.local_reply.borrow().is_some() {
        return (ex, step);
    }
    *host.request_body.borrow_mut() = body.as_bytes().to_vec();
    let step = callback(host, |h| ex.on_request_body(h, body.len(), true));
    (ex, step)
}

fn header(host: &MemoryHost, name: &str) -> Option<String> {
    host.request_headers.borrow().iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}"#;

#[test]
fn the_metadata_document_is_served_without_credentials_and_without_an_audit_record() {
    let s = shared(json!({}));
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"] {
        let h = host("GET", path, "mcp_demo", None, None);
        let mut ex = Exchange::new(s.clone(), Rc::new(Metrics::new()));
        assert_eq!(callback(&h, |x| ex.on_request_headers(x, true)), Step::Pause);
        let (status, headers, body) = h.local_reply.borrow().clone().unwrap();
        assert_eq!(status, 200);
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["resource"], "https://gw.example/mcp");
        callback(&h, |x| ex.on_log(x));
        assert!(h.prop(&["tollgate.audit"]).is_none());
    }
    let h = host("POST", "/.well-known/oauth-protected-resource/mcp", "mcp_demo", None, None);
    let mut ex = Exchange::new(s.clone(), Rc::new(Metrics::new()));
    callback(&h, |x| ex.on_request_headers(x, false));
    assert_eq!(h.local_reply.borrow().as_ref().map(|r| r.0), Some(405));
}

#[test]
fn a_missing_token_gets_401_with_the_default_metadata_url() {
    let s = shared(json!({}));
    let h = host("POST", "/mcp", "mcp_demo", None, None);
    let (_, step) = post(&s, &h, CALL);
    assert_eq!(step, Step::Pause);
    let (status, headers, _) = h.local_reply.borrow().clone().unwrap();
    assert_eq!(status, 401);
    let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").unwrap().1.clone();
    assert_eq!(challenge, r#"Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp""#);
}

#[test]
fn a_token_jwt_authn_could_not_verify_gets_401_invalid_token() {
    let s = shared(json!({}));
    let h = host("POST", "/mcp", "mcp_demo", Some("forged"), None);
    h.set_prop(&["metadata", "filter_metadata", JWT_NS, "jwt_failure", "message"], b"Jwt verification fails");
    let (_, _) = post(&s, &h, CALL);
    let (status, headers, _) = h.local_reply.borrow().clone().unwrap();
    assert_eq!(status, 401);
    let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").unwrap().1.clone();
    assert!(challenge.starts_with(r#"Bearer error="invalid_token", resource_metadata=""#), "{challenge}");
    let a = audit(&h);
    assert_eq!(a["decision"], "deny");
    assert!(a["error"].as_str().unwrap().contains("Jwt verification fails"));
}

#[test]
fn servers_without_exchange_get_no_callout_and_no_caller_token() {
    let s = shared(json!({}));
    let h = host("POST", "/mcp", "mcp_demo", Some("caller-token"), Some("alice"));
    let (_, step) = post(&s, &h, CALL);
    assert_eq!(step, Step::Continue);
    assert!(h.http_calls.borrow().is_empty());
    assert_eq!(header(&h, "authorization"), None);
}

#[test]
fn the_exchanged_token_replaces_the_callers_and_is_cached() {
    let s = shared(json!({}));
    let h = host("POST", "/mcp", "mcp_billing", Some("caller-token"), Some("alice"));
    let (mut ex, step) = post(&s, &h, CALL);
    assert_eq!(step, Step::Pause);
    let calls = h.http_calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "oauth_as");
    let body = String::from_utf8(calls[0].2.clone()).unwrap();
    assert!(body.contains("subject_token=caller-token") && body.contains("audience=billing-mcp"), "{body}");
    // Held: the caller's token is already gone, nothing forwarded yet.
    assert_eq!(header(&h, "authorization"), None);
    assert_eq!(callback(&h, |x| ex.on_request_body(x, 0, true)), Step::Pause);
    // An answer for another call changes nothing.
    callback(&h, |x| ex.on_http_call_response(x, 5, Ok((200, &br#"{"access_token":"zz","token_type":"Bearer"}"#[..]))));
    assert!(h.resumed.borrow().is_empty());
    let granted = br#"{"access_token":"exchanged-1","token_type":"Bearer","expires_in":600}"#;
    callback(&h, |x| ex.on_http_call_response(x, 1001, Ok((200, &granted[..]))));
    assert_eq!(header(&h, "authorization").as_deref(), Some("Bearer exchanged-1"));
    assert_eq!(h.resumed.borrow().as_slice(), &[Direction::Request]);
    assert_eq!(h.metric("tollgate.mcp.token_exchange.server.billing.result.exchanged"), Some(1));

    // Same caller token, same server: from the cache, no callout.
    let h2 = host("POST", "/mcp", "mcp_billing", Some("caller-token"), Some("alice"));
    *h2.shared.borrow_mut() = h.shared.borrow().clone();
    *h2.clock_nanos.borrow_mut() = *h.clock_nanos.borrow();
    let (_, step) = post(&s, &h2, CALL);
    assert_eq!(step, Step::Continue);
    assert!(h2.http_calls.borrow().is_empty());
    assert_eq!(header(&h2, "authorization").as_deref(), Some("Bearer exchanged-1"));
    // Another caller token: exchanged on its own.
    let h3 = host("POST", "/mcp", "mcp_billing", Some("other-token"), Some("bob"));
    *h3.shared.borrow_mut() = h.shared.borrow().clone();
    let (_, step) = post(&s, &h3, CALL);
    assert_eq!(step, Step::Pause);
    assert_eq!(h3.http_calls.borrow().len(), 1);
}

fn refused(answer: Result<(u16, &[u8]), ()>) -> (MemoryHost, u32, Value, Value) {
    let s = shared(json!({}));
    let h = host("POST", "/mcp", "mcp_billing", Some("caller-token"), Some("alice"));
    let (mut ex, _) = post(&s, &h, CALL);
    callback(&h, |x| ex.on_http_call_response(x, 1001, answer));
    assert!(h.resumed.borrow().is_empty());
    let (status, _, body) = h.local_reply.borrow().clone().expect("a refusal");
    let a = audit(&h);
    (h, status, serde_json::from_slice(&body).unwrap(), a)
}

#[test]
fn any_failure_refuses_the_request_in_json_rpc_and_audits_it() {
    let (_, status, body, a) = refused(Err(()));
    assert_eq!(status, 503);
    assert_eq!((body["id"].clone(), body["error"]["code"].clone()), (json!(7), json!(-32603)));
    assert_eq!((a["decision"].as_str(), a["tool"].as_str()), (Some("error"), Some("add")));
    assert!(a["error"].as_str().unwrap().starts_with("upstream credential: "), "{a}");
    let (_, status, _, _) = refused(Ok((500, b"down")));
    assert_eq!(status, 503);
    let (_, status, _, _) = refused(Ok((401, br#"{"error":"invalid_client"}"#)));
    assert_eq!(status, 502);
    let (_, status, _, _) = refused(Ok((200, b"{}")));
    assert_eq!(status, 502);
    let (h, status, body, a) = refused(Ok((400, br#"{"error":"invalid_grant"}"#)));
    assert_eq!(status, 401);
    assert_eq!(body["id"], 7);
    assert_eq!(a["decision"], "deny");
    let challenge = h.local_reply.borrow().clone().unwrap().1.into_iter().find(|(k, _)| k == "www-authenticate").unwrap().1;
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#), "{challenge}");
}

#[test]
fn a_server_with_exchange_refuses_callers_without_a_verified_token() {
    // An identity from another source (an API key) has no token to exchange.
    let s = shared(json!({"identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
        {"sha256": tollgate_core::hash::sha256_hex(b"k1"), "name": "k", "principal": "carol"}]}}}));
    let h = host("POST", "/mcp", "mcp_billing", None, None);
    h.request_headers.borrow_mut().push(("x-api-key".into(), "k1".into()));
    let (_, step) = post(&s, &h, CALL);
    assert_eq!(step, Step::Pause);
    assert!(h.http_calls.borrow().is_empty());
    assert_eq!(h.local_reply.borrow().as_ref().map(|r| r.0), Some(401));
}

#[test]
fn the_endpoint_unreachable_at_dispatch_refuses_with_503() {
    let s = shared(json!({}));
    let h = host("POST", "/mcp", "mcp_billing", Some("caller-token"), Some("alice"));
    h.grpc_refused.set(true);
    let (_, step) = post(&s, &h, CALL);
    assert_eq!(step, Step::Pause);
    assert_eq!(h.local_reply.borrow().as_ref().map(|r| r.0), Some(503));
}

/// Approval runs first and the token is exchanged only after a yes: no credential is minted
/// for a call the approver refuses, and the call waits for both answers.
#[test]
fn an_approved_call_gets_its_credential_only_after_the_yes() {
    let approve = json!({
        "approval": {"cluster": "approver", "timeout_ms": 1000},
        "policy": {"rules": [
            {"id": "risky-add", "effect": "approve", "principals": ["*"], "tools": ["add"]}
        ]}
    });
    let s = shared(approve.clone());
    let h = host("POST", "/mcp", "mcp_billing", Some("caller-token"), Some("alice"));
    let (mut ex, step) = post(&s, &h, CALL);
    assert_eq!(step, Step::Pause);
    let calls = h.http_calls.borrow().clone();
    assert_eq!(calls.len(), 1, "only the approver is asked first");
    assert_eq!(calls[0].0, "approver");
    callback(&h, |x| ex.on_http_call_response(x, 1001, Ok((200, &br#"{"approved": true}"#[..]))));
    let calls = h.http_calls.borrow().clone();
    assert_eq!(calls.len(), 2, "after the yes, the token endpoint");
    assert_eq!(calls[1].0, "oauth_as");
    assert!(h.resumed.borrow().is_empty(), "held until the credential is there");
    let granted = br#"{"access_token":"exchanged-2","token_type":"Bearer","expires_in":600}"#;
    callback(&h, |x| ex.on_http_call_response(x, 1002, Ok((200, &granted[..]))));
    assert_eq!(header(&h, "authorization").as_deref(), Some("Bearer exchanged-2"));
    assert_eq!(h.resumed.borrow().as_slice(), &[Direction::Request]);

    // A no: refused, and the token endpoint is never asked.
    let h = host("POST", "/mcp", "mcp_billing", Some("caller-token"), Some("alice"));
    let (mut ex, _) = post(&s, &h, CALL);
    callback(&h, |x| ex.on_http_call_response(x, 1001, Ok((200, &br#"{"approved": false}"#[..]))));
    assert_eq!(h.http_calls.borrow().len(), 1);
    assert!(h.resumed.borrow().is_empty());
    assert_eq!(h.local_reply.borrow().as_ref().map(|r| r.0), Some(403));
}

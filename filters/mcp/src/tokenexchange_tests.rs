use super::*;
use serde_json::json;
use tollgate_core::host::MemoryHost;

fn config(extra: serde_json::Value) -> TokenExchangeConfig {
    let mut v = json!({"cluster": "oauth_as", "authority": "as.example", "client_id": "tollgate gw", "client_secret": "s3cr&t:x",
                       "servers": {"billing": {"audience": "billing-mcp", "resource": "http://billing.example/mcp", "scope": "read write"}}});
    if let serde_json::Value::Object(m) = extra {
        for (k, val) in m {
            v[k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    let text = std::str::from_utf8(body).unwrap();
    text.split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            let v = tollgate_core::text::percent_decode(&v.replace('+', " ")).unwrap();
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn form_encoding_percent_encodes_everything_but_unreserved() {
    assert_eq!(form_encode("a b&c=d/é+~"), "a+b%26c%3Dd%2F%C3%A9%2B%7E");
    assert_eq!(form_encode("A-z.0_9*"), "A-z.0_9*");
}

#[test]
fn the_request_is_an_rfc_8693_exchange_with_basic_client_auth() {
    let t = TokenExchange::compile(config(json!({})), "token_exchange").unwrap();
    let (headers, body) = t.request("billing", "eyJ.a+b/c=");
    assert!(headers.contains(&(":path".into(), "/token".into())));
    assert!(headers.contains(&(":authority".into(), "as.example".into())));
    assert!(headers.contains(&("content-type".into(), "application/x-www-form-urlencoded".into())));
    let basic = headers.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
    let decoded = base64::engine::general_purpose::STANDARD.decode(basic.strip_prefix("Basic ").unwrap()).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), "tollgate+gw:s3cr%26t%3Ax");
    assert_eq!(
        form(&body),
        vec![
            ("grant_type".into(), GRANT_TYPE.into()),
            ("subject_token".into(), "eyJ.a+b/c=".into()),
            ("subject_token_type".into(), ACCESS_TOKEN_TYPE.into()),
            ("audience".into(), "billing-mcp".into()),
            ("resource".into(), "http://billing.example/mcp".into()),
            ("scope".into(), "read write".into()),
        ]
    );
    let t = TokenExchange::compile(config(json!({"client_auth": "client_secret_post"})), "token_exchange").unwrap();
    let (headers, body) = t.request("billing", "tok");
    assert!(!headers.iter().any(|(k, _)| k == "authorization"));
    let f = form(&body);
    assert!(f.contains(&("client_id".into(), "tollgate gw".into())) && f.contains(&("client_secret".into(), "s3cr&t:x".into())));
}

#[test]
fn answers_are_read_failing_closed() {
    let ok = br#"{"access_token":"abc.def-1","token_type":"Bearer","expires_in":300,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#;
    assert_eq!(read_answer(Some((200, ok))), Ok(Granted { access_token: "abc.def-1".into(), expires_in: Some(300) }));
    assert_eq!(read_answer(Some((200, br#"{"access_token":"a","token_type":"bearer"}"#))).unwrap().expires_in, None);
    assert!(matches!(read_answer(None), Err(Failure::Unavailable { status: 503, .. })));
    assert!(matches!(read_answer(Some((503, b"upstream connect error"))), Err(Failure::Unavailable { status: 503, .. })));
    assert!(matches!(read_answer(Some((500, br#"{"error":"server_error"}"#))), Err(Failure::Unavailable { status: 503, .. })));
    assert!(matches!(read_answer(Some((400, br#"{"error":"invalid_grant"}"#))), Err(Failure::Rejected(_))));
    assert!(matches!(read_answer(Some((400, br#"{"error":"invalid_request"}"#))), Err(Failure::Rejected(_))));
    for (status, body) in [
        (401, &br#"{"error":"invalid_client"}"#[..]),
        (200, b"not json"),
        (200, br#"{"token_type":"Bearer"}"#),
        (200, br#"{"access_token":"","token_type":"Bearer"}"#),
        (200, br#"{"access_token":"a\r\nx-evil: 1","token_type":"Bearer"}"#),
        (200, br#"{"access_token":"a","token_type":"DPoP"}"#),
        (200, br#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token"}"#),
    ] {
        assert!(matches!(read_answer(Some((status, body))), Err(Failure::Unavailable { status: 502, .. })), "{status} {:?}", std::str::from_utf8(body));
    }
}

#[test]
fn bearer_tokens_are_read_from_the_authorization_header() {
    assert_eq!(bearer(Some("Bearer abc")).as_deref(), Some("abc"));
    assert_eq!(bearer(Some("bearer  abc ")).as_deref(), Some("abc"));
    assert_eq!(bearer(Some("Basic abc")), None);
    assert_eq!(bearer(Some("Bearer")), None);
    assert_eq!(bearer(None), None);
}

#[test]
fn tokens_are_cached_per_caller_token_and_server_until_expiry_minus_skew() {
    let t = TokenExchange::compile(config(json!({"expiry_skew_secs": 10})), "token_exchange").unwrap();
    let host = MemoryHost::new();
    *host.clock_nanos.borrow_mut() = 1_000_000_000_000;
    t.remember(&host, "billing", "caller-a", &Granted { access_token: "x1".into(), expires_in: Some(60) });
    assert_eq!(t.cached(&host, "billing", "caller-a").as_deref(), Some("x1"));
    assert_eq!(t.cached(&host, "billing", "caller-b"), None);
    assert_eq!(t.cached(&host, "other", "caller-a"), None);
    // The caller's token is not stored in clear.
    assert!(host.shared.borrow().values().all(|(v, _)| !String::from_utf8_lossy(v).contains("caller-a")));
    *host.clock_nanos.borrow_mut() += 49_000_000_000;
    assert_eq!(t.cached(&host, "billing", "caller-a").as_deref(), Some("x1"));
    *host.clock_nanos.borrow_mut() += 1_000_000_000;
    assert_eq!(t.cached(&host, "billing", "caller-a"), None);
    // Without expires_in, or expiring within the skew: never cached.
    t.remember(&host, "billing", "caller-c", &Granted { access_token: "x2".into(), expires_in: None });
    t.remember(&host, "billing", "caller-d", &Granted { access_token: "x3".into(), expires_in: Some(5) });
    assert_eq!(t.cached(&host, "billing", "caller-c"), None);
    assert_eq!(t.cached(&host, "billing", "caller-d"), None);
}

#[test]
fn bad_configuration_is_refused_naming_the_field() {
    let cases = [
        (json!({"cluster": ""}), "token_exchange.cluster:"),
        (json!({"path": "token"}), "token_exchange.path:"),
        (json!({"timeout_ms": 0}), "token_exchange.timeout_ms:"),
        (json!({"cache_entries": 0}), "token_exchange.cache_entries:"),
        (json!({"servers": {}}), "token_exchange.servers:"),
        (json!({"servers": {"x": {"scope": "a"}}}), "token_exchange.servers.x:"),
    ];
    for (extra, prefix) in cases {
        let err = TokenExchange::compile(config(extra.clone()), "token_exchange").unwrap_err();
        assert!(err.0.starts_with(prefix), "{extra}: {err}");
    }
    let err = tollgate_core::config::load::<crate::config::Config>(
        br#"{"token_exchange":{"cluster":"a","authority":"b","client_id":"c","client_secret":"d","servers":{"s":{"audiences":"x"}}}}"#,
    )
    .unwrap_err();
    assert!(err.0.starts_with("token_exchange.servers"), "{err}");
}

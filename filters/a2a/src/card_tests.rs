use super::*;
use serde_json::json;

const M: Mapping<'static> = Mapping { public_base: "http://gw:10000", public_prefix: "/agents/echo/", upstream_prefix: "/" };

#[test]
fn maps_paths_without_doubling() {
    assert_eq!(map_url("http://127.0.0.1:9101/", &M).as_deref(), Some("http://gw:10000/agents/echo/"));
    assert_eq!(map_url("http://127.0.0.1:9101", &M).as_deref(), Some("http://gw:10000/agents/echo/"));
    assert_eq!(map_url("http://127.0.0.1:9101/a2a/v1", &M).as_deref(), Some("http://gw:10000/agents/echo/a2a/v1"));
    assert_eq!(map_url("https://internal/agents/echo/", &M).as_deref(), Some("http://gw:10000/agents/echo/"));
    assert_eq!(map_url("http://gw:10000/agents/echo/x?y=1", &M).as_deref(), Some("http://gw:10000/agents/echo/x?y=1"));
    assert_eq!(map_url("grpc://agent:50051", &M), None);
    assert_eq!(map_url("agent:50051", &M), None);
    let root = Mapping { public_base: "https://gw", public_prefix: "/", upstream_prefix: "/" };
    assert_eq!(map_url("http://10.0.0.1:9101/rpc", &root).as_deref(), Some("https://gw/rpc"));
    let rewritten = Mapping { public_base: "https://gw/base", public_prefix: "/agents/b/", upstream_prefix: "/svc/" };
    assert_eq!(map_url("http://b:80/svc/rpc", &rewritten).as_deref(), Some("https://gw/base/agents/b/rpc"));
    assert_eq!(map_url("http://b:80/svc", &rewritten).as_deref(), Some("https://gw/base/agents/b/"));
    assert_eq!(map_url("http://b:80/other", &rewritten).as_deref(), Some("https://gw/base/agents/b/other"));
    assert_eq!(map_url("http://b:80/base/agents/b/rpc", &rewritten).as_deref(), Some("https://gw/base/agents/b/rpc"));
    assert_eq!(map_url("http://b:80/agents/b/rpc", &rewritten).as_deref(), Some("https://gw/base/agents/b/rpc"));
}

#[test]
fn non_ascii_urls_never_panic() {
    for url in ["описание", "agentéé", "httpé://x", "http:/é", "https:/é", "httpsé//x", "é", "", "http://", "https://ü/ä?ö"] {
        let _ = map_url(url, &M);
    }
    assert_eq!(map_url("описание", &M), None);
    assert_eq!(map_url("agentéé", &M), None);
    assert_eq!(map_url("http://agentéé/описание", &M).as_deref(), Some("http://gw:10000/agents/echo/описание"));
    assert_eq!(map_url("HTTPS://ü", &M).as_deref(), Some("http://gw:10000/agents/echo/"));
    let body = serde_json::to_vec(&json!({"url": "agentéé", "supportedInterfaces": [{"url": "описание"}, {"url": "http://é/"}]})).unwrap();
    let (out, outcome) = rewrite_body(&body, &M, SignedCards::Keep, false).unwrap();
    assert_eq!(outcome.urls_rewritten, 1);
    assert!(out.is_some());
}

#[test]
fn rewrites_both_card_shapes() {
    let mut card = json!({
        "name": "echo", "url": "http://127.0.0.1:9101/", "preferredTransport": "JSONRPC",
        "additionalInterfaces": [{"url": "http://127.0.0.1:9101/", "transport": "JSONRPC"}, {"url": "127.0.0.1:50051", "transport": "GRPC"}],
        "supportedInterfaces": [{"url": "http://127.0.0.1:9101/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "provider": {"url": "https://example.com"}
    });
    let out = rewrite_card(&mut card, &M, SignedCards::Keep);
    assert_eq!(out.urls_rewritten, 3);
    assert_eq!(card["url"], "http://gw:10000/agents/echo/");
    assert_eq!(card["additionalInterfaces"][0]["url"], "http://gw:10000/agents/echo/");
    assert_eq!(card["additionalInterfaces"][1]["url"], "127.0.0.1:50051");
    assert_eq!(card["supportedInterfaces"][0]["url"], "http://gw:10000/agents/echo/");
    assert_eq!(card["provider"]["url"], "https://example.com");
    // Idempotent: a second pass changes nothing.
    assert_eq!(rewrite_card(&mut card, &M, SignedCards::Keep).urls_rewritten, 0);
}

#[test]
fn signed_cards_kept_or_stripped() {
    let signed = json!({"url": "http://a/", "signatures": [{"protected": "x", "signature": "y"}]});
    let mut kept = signed.clone();
    let out = rewrite_card(&mut kept, &M, SignedCards::Keep);
    assert_eq!(out, Outcome { urls_rewritten: 0, signed: true, signatures_removed: false });
    assert_eq!(kept, signed);
    let mut stripped = signed.clone();
    let out = rewrite_card(&mut stripped, &M, SignedCards::Strip);
    assert!(out.signed && out.signatures_removed);
    assert!(stripped.get("signatures").is_none());
    assert_eq!(stripped["url"], "http://gw:10000/agents/echo/");
    let mut empty = json!({"url": "http://a/", "signatures": []});
    assert!(!rewrite_card(&mut empty, &M, SignedCards::Keep).signed);
}

#[test]
fn bodies() {
    let (body, out) = rewrite_body(br#"{"url":"http://a:1/"}"#, &M, SignedCards::Keep, false).unwrap();
    assert_eq!(out.urls_rewritten, 1);
    assert_eq!(body.unwrap(), br#"{"url":"http://gw:10000/agents/echo/"}"#.to_vec());
    let (body, _) = rewrite_body(br#"{"jsonrpc":"2.0","id":1,"result":{"url":"http://a:1/"}}"#, &M, SignedCards::Keep, true).unwrap();
    let v: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(v["result"]["url"], "http://gw:10000/agents/echo/");
    let (body, _) = rewrite_body(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32007}}"#, &M, SignedCards::Keep, true).unwrap();
    assert!(body.is_none());
    let (body, _) = rewrite_body(br#"{"name":"no urls"}"#, &M, SignedCards::Keep, false).unwrap();
    assert!(body.is_none());
    assert!(rewrite_body(b"not json", &M, SignedCards::Keep, false).is_err());
}

#[test]
fn public_base_from_request() {
    assert_eq!(public_base(Some("https://gw/"), None, None, Some("x")).as_deref(), Some("https://gw"));
    assert_eq!(public_base(None, Some("https"), Some("http"), Some("gw:8443")).as_deref(), Some("https://gw:8443"));
    assert_eq!(public_base(None, Some("https, http"), None, Some("gw")).as_deref(), Some("https://gw"));
    assert_eq!(public_base(None, None, Some("http"), Some("127.0.0.1:10000")).as_deref(), Some("http://127.0.0.1:10000"));
    assert_eq!(public_base(None, Some("javascript"), None, Some("gw")).as_deref(), Some("http://gw"));
    assert_eq!(public_base(None, None, None, Some("evil/path")), None);
    assert_eq!(public_base(None, None, None, None), None);
    for bad in ["#gw:10000", "gw?x", "gw\\x", "u@gw", "gw/x", "gw x", "gw%41"] {
        assert_eq!(public_base(None, None, None, Some(bad)), None, "{bad}");
    }
    assert_eq!(public_base(None, None, None, Some("[::1]:8080")).as_deref(), Some("http://[::1]:8080"));
}

#[test]
fn prefixes_normalize() {
    assert_eq!(normalize_prefix(""), "/");
    assert_eq!(normalize_prefix("/"), "/");
    assert_eq!(normalize_prefix("agents/echo"), "/agents/echo/");
    assert_eq!(normalize_prefix("/agents/echo/"), "/agents/echo/");
}

use super::*;
use serde_json::{json, Value};

fn compile(v: Value) -> Result<OAuth, ConfigError> {
    let c: OAuthConfig = serde_json::from_value(v).unwrap();
    OAuth::compile(&c, "oauth")
}

fn demo() -> OAuth {
    compile(json!({"resource": "https://gw.example/mcp", "authorization_servers": ["https://as.example"],
                   "scopes_supported": ["mcp:tools"], "resource_name": "Tollgate MCP"}))
    .unwrap()
}

#[test]
fn the_document_is_rfc_9728_and_served_at_both_well_known_paths() {
    let o = demo();
    assert_eq!(o.metadata_url, "https://gw.example/.well-known/oauth-protected-resource/mcp");
    assert!(o.serves("/.well-known/oauth-protected-resource/mcp"));
    assert!(o.serves("/.well-known/oauth-protected-resource"));
    assert!(o.serves("/.well-known/oauth-protected-resource/mcp?x=1"));
    assert!(!o.serves("/.well-known/oauth-protected-resource/other"));
    assert!(!o.serves("/mcp"));
    let r = o.answer("GET");
    assert_eq!(r.status, 200);
    assert!(r.headers.contains(&("cache-control".to_string(), "public, max-age=3600".to_string())));
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        doc,
        json!({"resource": "https://gw.example/mcp", "authorization_servers": ["https://as.example"],
               "scopes_supported": ["mcp:tools"], "bearer_methods_supported": ["header"], "resource_name": "Tollgate MCP"})
    );
    let r = o.answer("POST");
    assert_eq!((r.status, r.headers.clone()), (405, vec![("allow".to_string(), "GET".to_string())]));
}

#[test]
fn a_resource_without_path_is_served_at_the_bare_path_only() {
    let o = compile(json!({"resource": "http://127.0.0.1:8080/", "authorization_servers": ["http://127.0.0.1:9000"]})).unwrap();
    assert_eq!(o.metadata_url, "http://127.0.0.1:8080/.well-known/oauth-protected-resource");
    assert!(o.serves("/.well-known/oauth-protected-resource"));
    let doc: Value = serde_json::from_slice(&o.answer("GET").body).unwrap();
    assert!(doc.get("scopes_supported").is_none() && doc.get("resource_name").is_none());
}

#[test]
fn bad_fields_are_refused_naming_them() {
    let cases = [
        (json!({"resource": "gw.example/mcp", "authorization_servers": ["https://as"]}), "oauth.resource:"),
        (json!({"resource": "https://gw/mcp#x", "authorization_servers": ["https://as"]}), "oauth.resource:"),
        (json!({"resource": "https://gw/mcp?a=1", "authorization_servers": ["https://as"]}), "oauth.resource:"),
        (json!({"resource": "https:///mcp", "authorization_servers": ["https://as"]}), "oauth.resource:"),
        (json!({"resource": "https://gw/mcp", "authorization_servers": []}), "oauth.authorization_servers:"),
        (json!({"resource": "https://gw/mcp", "authorization_servers": ["https://as", "as2"]}), "oauth.authorization_servers[1]:"),
        (json!({"resource": "https://gw/mcp", "authorization_servers": ["https://as"], "bearer_methods_supported": ["cookie"]}),
         "oauth.bearer_methods_supported[0]:"),
        (json!({"resource": "https://gw/mcp", "authorization_servers": ["https://as"], "jwt_failed_status_key": ""}),
         "oauth.jwt_failed_status_key:"),
    ];
    for (v, prefix) in cases {
        let err = compile(v.clone()).unwrap_err();
        assert!(err.0.starts_with(prefix), "{v}: {err}");
    }
    let err = tollgate_core::config::load::<crate::config::Config>(br#"{"oauth":{"resource":"https://gw/mcp","authorization_servers":["https://as"],"scope":["x"]}}"#).unwrap_err();
    assert!(err.0.starts_with("oauth"), "{err}");
    assert!(err.0.contains("scope"), "{err}");
}

#[test]
fn a_failed_jwt_status_is_read_from_the_configured_metadata() {
    let o = compile(json!({"resource": "https://gw/mcp", "authorization_servers": ["https://as"], "jwt_failed_status_key": "jwt_failure"})).unwrap();
    let host = tollgate_core::host::MemoryHost::new();
    assert_eq!(o.jwt_failure(&host), None);
    host.set_prop(&["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "jwt_failure", "message"], b"Audiences in Jwt are not allowed");
    assert_eq!(o.jwt_failure(&host).as_deref(), Some("Audiences in Jwt are not allowed"));
    // A missing token is not a failed one.
    let host2 = tollgate_core::host::MemoryHost::new();
    host2.set_prop(&["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "jwt_failure", "message"], b"Jwt is missing");
    assert_eq!(o.jwt_failure(&host2), None);
    // Not configured: never read.
    assert_eq!(demo().jwt_failure(&host), None);
}

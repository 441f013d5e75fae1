//! Local replies of the MCP filter: refusals (bad input), denials (policy) in the `hide` or
//! `explain` style, and 401s. Pure: builds status, headers and body; the filter sends them.

use crate::config::DenyStyle;
use crate::message::{codes, Revision, Target};
use serde::Serialize;
use serde_json::value::RawValue;
use tollgate_core::reply::rpc_error_body;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    /// Extra headers besides `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A JSON-RPC error reply to a message that could not be accepted (bad input).
pub fn refusal(status: u32, id: Option<&RawValue>, code: i64, message: &str) -> Reply {
    Reply { status, headers: Vec::new(), body: rpc_error_body::<()>(id, code, message, None) }
}

/// What a denial reply must answer, per request message of the body.
#[derive(Debug)]
pub struct DeniedRequest<'a> {
    pub id: Option<&'a RawValue>,
    pub method: &'a str,
    pub target: &'a Target<'a>,
    /// `Some(rule)` when this message was denied (rule `None`: no rule allows it);
    /// `None` when it was acceptable but shares a batch with a denied one.
    pub denied: Option<Option<&'a str>>,
    /// The caller's lists show the target: `hide` answers "not allowed", not "unknown"
    /// (`denials.rs`).
    pub shown: bool,
}

#[derive(Serialize)]
struct ExplainData<'a> {
    rule_id: Option<&'a str>,
    reason: &'a str,
}

const NO_RULE: &str = "no policy rule allows this request";
const BATCH: &str = "another message in the batch was denied";

/// Builds the denial for a body's request messages (`batch`: answer with an array). `hide`
/// answers with the HTTP status the revision gives the error (200 before 2026-07-28; there
/// -32601 is 404 and -32602 400), as a server answers for what does not exist.
pub fn denial(
    style: DenyStyle,
    revision: Revision,
    messages: &[DeniedRequest<'_>],
    batch: bool,
    resource_metadata: Option<&str>,
) -> Reply {
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(messages.len());
    let mut first_rule: Option<&str> = None;
    // Batches exist only up to 2025-03-26, where every error rides on 200.
    let mut hidden_status = 200;
    for m in messages {
        let body = match (style, m.denied) {
            (DenyStyle::Hide, Some(_)) if m.shown => {
                if !batch {
                    hidden_status = crate::denials::STATUS;
                }
                crate::denials::not_allowed(m.id, m.method, m.target)
            }
            (DenyStyle::Hide, Some(_)) => {
                let (code, body) = hidden_error(m);
                if !batch {
                    hidden_status = revision.error_status(code);
                }
                body
            }
            (DenyStyle::Hide, None) => rpc_error_body::<()>(m.id, codes::INVALID_REQUEST, "Batch rejected", None),
            (DenyStyle::Explain, Some(rule)) => {
                if first_rule.is_none() {
                    first_rule = rule;
                }
                let reason = if rule.is_some() { "denied by policy rule" } else { NO_RULE };
                let what = describe(m.method, m.target);
                rpc_error_body(m.id, codes::FORBIDDEN, &format!("Forbidden: {what}"), Some(ExplainData { rule_id: rule, reason }))
            }
            (DenyStyle::Explain, None) => rpc_error_body(
                m.id,
                codes::FORBIDDEN,
                "Forbidden: batch rejected",
                Some(ExplainData { rule_id: None, reason: BATCH }),
            ),
        };
        bodies.push(body);
    }
    let body = if batch { join_array(&bodies) } else { bodies.into_iter().next().unwrap_or_default() };
    match style {
        DenyStyle::Hide => Reply { status: hidden_status, headers: Vec::new(), body },
        DenyStyle::Explain => Reply {
            status: 403,
            headers: vec![("www-authenticate".into(), insufficient_scope(first_rule, resource_metadata))],
            body,
        },
    }
}

#[derive(Serialize)]
struct RateLimitData<'a> {
    limit_id: &'a str,
    retry_after_secs: u64,
}

/// A request refused by a rate limit: HTTP 429, `Retry-After`, JSON-RPC error `-31429` with
/// `data: {limit_id, retry_after_secs}` for every request message (`denied: Some(_)` marks
/// the call over the limit; a batch is answered whole, as an array).
pub fn rate_limited(messages: &[DeniedRequest<'_>], batch: bool, limit_id: &str, retry_after_secs: u64) -> Reply {
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let message = match m.denied {
                Some(_) => format!("Rate limited: {} (limit {limit_id})", describe(m.method, m.target)),
                None => "Rate limited: batch rejected".to_string(),
            };
            rpc_error_body(m.id, codes::RATE_LIMITED, &message, Some(RateLimitData { limit_id, retry_after_secs }))
        })
        .collect();
    let body = if batch { join_array(&bodies) } else { bodies.into_iter().next().unwrap_or_default() };
    Reply { status: 429, headers: vec![("retry-after".into(), retry_after_secs.to_string())], body }
}

/// GET / DELETE refused by policy: `hide` answers as a server without that method would
/// (405), `explain` with a 403.
pub fn session_denial(style: DenyStyle, rule: Option<&str>, resource_metadata: Option<&str>) -> Reply {
    match style {
        DenyStyle::Hide => method_not_allowed(),
        DenyStyle::Explain => Reply {
            status: 403,
            headers: vec![("www-authenticate".into(), insufficient_scope(rule, resource_metadata))],
            body: rpc_error_body(
                None,
                codes::FORBIDDEN,
                "Forbidden: this identity may not use this MCP server",
                Some(ExplainData { rule_id: rule, reason: if rule.is_some() { "denied by policy rule" } else { NO_RULE } }),
            ),
        },
    }
}

pub fn method_not_allowed() -> Reply {
    Reply {
        status: 405,
        headers: vec![("allow".into(), "POST".into())],
        body: rpc_error_body::<()>(None, codes::INVALID_REQUEST, "Method not allowed", None),
    }
}

/// 401: `invalid_token` when a credential was presented but is unknown, plain otherwise.
pub fn unauthorized(invalid_token: bool, resource_metadata: Option<&str>) -> Reply {
    let mut challenge = String::from("Bearer");
    let mut params: Vec<String> = Vec::new();
    if invalid_token {
        params.push(r#"error="invalid_token""#.into());
    }
    if let Some(url) = resource_metadata {
        params.push(format!(r#"resource_metadata="{}""#, quoted(url)));
    }
    if !params.is_empty() {
        challenge.push(' ');
        challenge.push_str(&params.join(", "));
    }
    let message = if invalid_token { "Unauthorized: unknown credential" } else { "Unauthorized: credentials required" };
    Reply {
        status: 401,
        headers: vec![("www-authenticate".into(), challenge)],
        body: rpc_error_body::<()>(None, codes::UNAUTHORIZED, message, None),
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum HiddenData<'a> {
    /// `resources/read` of an unknown URI: `{"uri": ...}`.
    Uri { uri: &'a str },
    /// -32601: the method's name, as a bare string.
    Method(&'a str),
}

/// A denial that reads as "does not exist", in the words of the MCP Python SDK server:
/// `Unknown resource: <uri>` with `data: {"uri"}`, `Method not found` with the method as
/// `data`; tools and prompts as the spec's -32602 `Unknown tool: X` / `Unknown prompt: X`.
/// The code, for the revision's HTTP status.
fn hidden_error(m: &DeniedRequest<'_>) -> (i64, Vec<u8>) {
    let (code, message, data) = match m.target {
        Target::Tool(n) => (codes::INVALID_PARAMS, format!("Unknown tool: {n}"), None),
        Target::Prompt(n) => (codes::INVALID_PARAMS, format!("Unknown prompt: {n}"), None),
        Target::Resource(u) => (codes::INVALID_PARAMS, format!("Unknown resource: {u}"), Some(HiddenData::Uri { uri: u })),
        Target::None => (codes::METHOD_NOT_FOUND, "Method not found".to_string(), Some(HiddenData::Method(m.method))),
    };
    (code, rpc_error_body(m.id, code, &message, data))
}

#[derive(Serialize)]
struct UnsupportedData<'a> {
    supported: Vec<&'static str>,
    requested: &'a str,
}

/// An `MCP-Protocol-Version` the filter does not know: HTTP 400, JSON-RPC -32022
/// `Unsupported protocol version` with `data: {supported: [the filter's revisions],
/// requested}` (2026-07-28's shape, as the SDK server answers), under the request's id.
pub fn unsupported_revision(id: Option<&RawValue>, requested: &str) -> Reply {
    let data = UnsupportedData { supported: Revision::ALL.iter().map(|r| r.as_str()).collect(), requested };
    Reply {
        status: 400,
        headers: Vec::new(),
        body: rpc_error_body(id, codes::UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", Some(data)),
    }
}

fn describe(method: &str, target: &Target<'_>) -> String {
    match target.name() {
        Some(name) => format!("{method} {name}"),
        None => method.to_string(),
    }
}

fn insufficient_scope(rule: Option<&str>, resource_metadata: Option<&str>) -> String {
    let description = match rule {
        Some(r) => format!("denied by policy rule {r}"),
        None => NO_RULE.to_string(),
    };
    let mut out = format!(r#"Bearer error="insufficient_scope", error_description="{}""#, quoted(&description));
    if let Some(url) = resource_metadata {
        out.push_str(&format!(r#", resource_metadata="{}""#, quoted(url)));
    }
    out
}

/// A value safe inside an HTTP quoted-string: visible ASCII without `"` and `\`.
fn quoted(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect()
}

fn join_array(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'['];
    tollgate_core::wire::push_json_elements(&mut out, parts);
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::borrow::Cow;

    fn raw(s: &str) -> Box<RawValue> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn hide_looks_like_an_unknown_tool() {
        let id = raw("7");
        let t = Target::Tool(Cow::Borrowed("admin_reset"));
        let r = denial(DenyStyle::Hide, Revision::R2025_11_25, &[DeniedRequest { id: Some(&id), method: "tools/call", target: &t, denied: Some(None), shown: false }], false, None);
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "Unknown tool: admin_reset"}}));
    }

    #[test]
    fn explain_carries_rule_and_challenge() {
        let id = raw(r#""a""#);
        let t = Target::Tool(Cow::Borrowed("transfer"));
        let r = denial(
            DenyStyle::Explain,
            Revision::R2026_07_28,
            &[DeniedRequest { id: Some(&id), method: "tools/call", target: &t, denied: Some(Some("no-\"big\"")), shown: false }],
            false,
            Some("https://gw/.well-known/oauth-protected-resource/mcp"),
        );
        assert_eq!(r.status, 403);
        let (name, value) = &r.headers[0];
        assert_eq!(name, "www-authenticate");
        assert!(value.starts_with(r#"Bearer error="insufficient_scope""#), "{value}");
        assert!(value.contains(r#"resource_metadata="https://gw/.well-known/oauth-protected-resource/mcp""#));
        assert!(!value.contains("\"big"));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], -31403);
        assert_eq!(v["error"]["data"]["rule_id"], "no-\"big\"");
    }

    #[test]
    fn batch_denial_answers_every_request() {
        let (a, b) = (raw("1"), raw("2"));
        let t1 = Target::Tool(Cow::Borrowed("add"));
        let t2 = Target::Tool(Cow::Borrowed("admin_reset"));
        let msgs = [
            DeniedRequest { id: Some(&a), method: "tools/call", target: &t1, denied: None, shown: false },
            DeniedRequest { id: Some(&b), method: "tools/call", target: &t2, denied: Some(Some("no-admin")), shown: false },
        ];
        let r = denial(DenyStyle::Hide, Revision::R2025_03_26, &msgs, true, None);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v[0]["error"]["code"], -32600);
        assert_eq!(v[1]["error"]["message"], "Unknown tool: admin_reset");
        let r = denial(DenyStyle::Explain, Revision::R2025_03_26, &msgs, true, None);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert!(r.headers[0].1.contains("no-admin"));
    }

    #[test]
    fn rate_limited_is_a_429_with_retry_after_and_the_limit() {
        let (a, b) = (raw("1"), raw(r#""b""#));
        let (t1, t2) = (Target::Tool(Cow::Borrowed("add")), Target::Tool(Cow::Borrowed("echo")));
        let one = [DeniedRequest { id: Some(&a), method: "tools/call", target: &t1, denied: Some(Some("burst")), shown: false }];
        let r = rate_limited(&one, false, "burst", 17);
        assert_eq!((r.status, r.headers.clone()), (429, vec![("retry-after".to_string(), "17".to_string())]));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -31429, "message": "Rate limited: tools/call add (limit burst)",
                   "data": {"limit_id": "burst", "retry_after_secs": 17}}})
        );
        let batch = [
            DeniedRequest { id: Some(&a), method: "tools/call", target: &t1, denied: None, shown: false },
            DeniedRequest { id: Some(&b), method: "tools/call", target: &t2, denied: Some(Some("burst")), shown: false },
        ];
        let v: Value = serde_json::from_slice(&rate_limited(&batch, true, "burst", 3).body).unwrap();
        assert_eq!(v[0]["error"]["message"], "Rate limited: batch rejected");
        assert_eq!(v[1]["id"], "b");
        assert_eq!(v[1]["error"]["data"]["retry_after_secs"], 3);
    }

    #[test]
    fn other_replies() {
        let r = unauthorized(true, None);
        assert_eq!((r.status, r.headers[0].1.as_str()), (401, r#"Bearer error="invalid_token""#));
        assert_eq!(unauthorized(false, None).headers[0].1, "Bearer");
        assert_eq!(method_not_allowed().status, 405);
        assert_eq!(session_denial(DenyStyle::Hide, None, None).status, 405);
        assert_eq!(session_denial(DenyStyle::Explain, Some("x"), None).status, 403);
        let t = Target::None;
        let r = denial(DenyStyle::Hide, Revision::R2025_11_25, &[DeniedRequest { id: None, method: "tools/list", target: &t, denied: Some(None), shown: false }], false, None);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32601, "message": "Method not found", "data": "tools/list"}}));
    }

    #[test]
    fn hidden_denials_take_the_revisions_status() {
        let id = raw("3");
        let (tool, uri, none) =
            (Target::Tool(Cow::Borrowed("x")), Target::Resource(Cow::Borrowed("file:///s")), Target::None);
        let one = |revision, method, target| {
            denial(DenyStyle::Hide, revision, &[DeniedRequest { id: Some(&id), method, target, denied: Some(None), shown: false }], false, None)
        };
        for revision in Revision::ALL {
            let modern = revision == Revision::R2026_07_28;
            assert_eq!(one(revision, "tools/call", &tool).status, if modern { 400 } else { 200 });
            assert_eq!(one(revision, "tools/list", &none).status, if modern { 404 } else { 200 });
            let r = one(revision, "resources/read", &uri);
            assert_eq!(r.status, if modern { 400 } else { 200 });
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                v,
                json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "Unknown resource: file:///s", "data": {"uri": "file:///s"}}})
            );
            // explain stays 403 at every revision.
            let r = denial(DenyStyle::Explain, revision, &[DeniedRequest { id: Some(&id), method: "tools/call", target: &tool, denied: Some(None), shown: false }], false, None);
            assert_eq!(r.status, 403);
        }
    }

    #[test]
    fn unsupported_revision_names_what_the_filter_supports() {
        let id = raw(r#""q""#);
        let r = unsupported_revision(Some(&id), "v999.0.0");
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": "q", "error": {"code": -32022, "message": "Unsupported protocol version",
                   "data": {"supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"], "requested": "v999.0.0"}}})
        );
        let v: Value = serde_json::from_slice(&unsupported_revision(None, "x").body).unwrap();
        assert_eq!(v["id"], Value::Null);
    }
}

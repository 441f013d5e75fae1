//! What a request is: an A2A JSON-RPC call (0.3 or 1.0 dialect), an HTTP+JSON (REST) call, an
//! agent-card fetch, or other traffic (a non-A2A POST to an agent is refused by `flow`). Paths
//! are classified percent-decoded, as the agent's server routes them. Pure: no host access.

use serde_json::value::RawValue;
use std::borrow::Cow;
use tollgate_core::jsonrpc::{self, Body, BodyError, Kind, RpcParseError};
use tollgate_core::text;

/// The protocol dialect, chosen by the `A2A-Version` header (missing or empty: 0.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V03,
    V10,
}

impl Dialect {
    pub fn from_header(value: Option<&str>) -> Dialect {
        match value.map(str::trim) {
            Some(v) if v.starts_with("1.") || v == "1" => Dialect::V10,
            Some(v) if v.split('.').next().and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 1) => Dialect::V10,
            _ => Dialect::V03,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::V03 => "0.3",
            Dialect::V10 => "1.0",
        }
    }
}

/// An A2A operation, named by its 1.0 JSON-RPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SendMessage,
    SendStreamingMessage,
    GetTask,
    ListTasks,
    CancelTask,
    SubscribeToTask,
    CreateTaskPushNotificationConfig,
    GetTaskPushNotificationConfig,
    ListTaskPushNotificationConfigs,
    DeleteTaskPushNotificationConfig,
    GetExtendedAgentCard,
}

const METHODS: &[(Method, &str, &str)] = &[
    (Method::SendMessage, "SendMessage", "message/send"),
    (Method::SendStreamingMessage, "SendStreamingMessage", "message/stream"),
    (Method::GetTask, "GetTask", "tasks/get"),
    (Method::ListTasks, "ListTasks", ""),
    (Method::CancelTask, "CancelTask", "tasks/cancel"),
    (Method::SubscribeToTask, "SubscribeToTask", "tasks/resubscribe"),
    (Method::CreateTaskPushNotificationConfig, "CreateTaskPushNotificationConfig", "tasks/pushNotificationConfig/set"),
    (Method::GetTaskPushNotificationConfig, "GetTaskPushNotificationConfig", "tasks/pushNotificationConfig/get"),
    (Method::ListTaskPushNotificationConfigs, "ListTaskPushNotificationConfigs", "tasks/pushNotificationConfig/list"),
    (Method::DeleteTaskPushNotificationConfig, "DeleteTaskPushNotificationConfig", "tasks/pushNotificationConfig/delete"),
    (Method::GetExtendedAgentCard, "GetExtendedAgentCard", "agent/getAuthenticatedExtendedCard"),
];

impl Method {
    /// Either dialect's JSON-RPC method name.
    pub fn from_name(name: &str) -> Option<Method> {
        METHODS
            .iter()
            .find(|(_, v10, v03)| *v10 == name || (!v03.is_empty() && *v03 == name))
            .map(|(m, _, _)| *m)
    }

    /// The 1.0 name, used in records, metrics and rules.
    pub fn name(self) -> &'static str {
        METHODS.iter().find(|(m, _, _)| *m == self).map(|(_, n, _)| *n).unwrap_or("Unknown")
    }

    pub fn streams(self) -> bool {
        matches!(self, Method::SendStreamingMessage | Method::SubscribeToTask)
    }

    /// The result is a Task, a Message or a stream of task events (ids and state to read).
    pub fn returns_task(self) -> bool {
        matches!(
            self,
            Method::SendMessage | Method::SendStreamingMessage | Method::GetTask | Method::CancelTask | Method::SubscribeToTask
        )
    }

    /// `params.id` names a task.
    pub fn id_is_task(self, dialect: Dialect) -> bool {
        match self {
            Method::GetTask | Method::CancelTask | Method::SubscribeToTask => true,
            Method::CreateTaskPushNotificationConfig
            | Method::GetTaskPushNotificationConfig
            | Method::ListTaskPushNotificationConfigs
            | Method::DeleteTaskPushNotificationConfig => dialect == Dialect::V03,
            _ => false,
        }
    }
}

/// The A2A transport binding a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    JsonRpc,
    Rest,
    Card,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::JsonRpc => "jsonrpc",
            Binding::Rest => "rest",
            Binding::Card => "card",
        }
    }
}

pub const CARD_PATH: &str = "/.well-known/agent-card.json";
pub const LEGACY_CARD_PATH: &str = "/.well-known/agent.json";

/// What the request line and headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// `GET …/.well-known/agent-card.json` (or the 0.2 `agent.json`). `prefix` is the public
    /// path before `.well-known`, ending in `/`.
    Card { legacy: bool, prefix: String },
    /// An HTTP+JSON call. `base` is the path before the operation (tenant and `/v1` included).
    Rest { method: Method, task_id: Option<String>, base: String, has_v1: bool },
    /// A POST with a JSON body: JSON-RPC if the body says so.
    JsonPost,
    Other,
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

fn is_json(content_type: Option<&str>) -> bool {
    tollgate_core::text::media_type(content_type)
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"))
}

/// Why a request path is refused: servers disagree on what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits, a decoded control character or non-UTF-8 bytes.
    BadEscape,
    /// An encoded `/`, backslash, `?` or `#`: some servers split on it after decoding, some do not.
    EncodedSeparator,
}

/// The path (query and fragment removed) percent-decoded, as the agent's server routes it
/// (uvicorn/Starlette decode the path before matching `/tasks/{id}:cancel`). Classifying the
/// raw form would let `/tasks/t%3Acancel` through as something else.
pub fn decode_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let raw = strip_query(path);
    let encoded_separator = raw.as_bytes().windows(3).any(|w| match *w {
        [b'%', hi, lo] => matches!((hi, lo.to_ascii_lowercase()), (b'2', b'f') | (b'5', b'c') | (b'3', b'f') | (b'2', b'3')),
        _ => false,
    });
    if encoded_separator {
        return Err(PathError::EncodedSeparator);
    }
    // Nothing escaped (the usual case): the path is its own decoded form.
    let decoded = if raw.contains('%') {
        Cow::Owned(text::percent_decode(raw).map_err(|_| PathError::BadEscape)?)
    } else {
        Cow::Borrowed(raw)
    };
    if decoded.chars().any(char::is_control) {
        return Err(PathError::BadEscape);
    }
    Ok(decoded)
}

/// What a URL path may carry literally (RFC 3986 `pchar` and `/`): everything else is encoded.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

/// Percent-encodes what may not appear literally in a URL path (a decoded prefix that goes
/// back into card URLs).
pub fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH).to_string()
}

/// The HTTP methods A2A uses: JSON-RPC is always a POST; the HTTP+JSON binding uses GET, POST
/// and DELETE. `HEAD` and `OPTIONS` (CORS preflight) carry no call and pass when they have no
/// body. Anything else on an agent route (PUT, PATCH, a body on HEAD/OPTIONS, an extension
/// method) is refused: the agent's server may still run what it carries.
pub fn http_method_allowed(http_method: &str, has_body: bool) -> bool {
    let is = |m: &str| http_method.eq_ignore_ascii_case(m);
    is("GET") || is("POST") || is("DELETE") || (!has_body && (is("HEAD") || is("OPTIONS")))
}

/// Classifies by method, path and content type. The path is classified in its decoded form.
pub fn classify_head(http_method: &str, path: &str, content_type: Option<&str>) -> Result<Head, PathError> {
    let path = decode_path(path)?;
    let path = path.as_ref();
    if http_method.eq_ignore_ascii_case("GET") {
        for (suffix, legacy) in [(CARD_PATH, false), (LEGACY_CARD_PATH, true)] {
            if let Some(before) = path.strip_suffix(suffix) {
                return Ok(Head::Card { legacy, prefix: encode_path(&format!("{before}/")) });
            }
        }
    }
    if let Some(rest) = classify_rest(http_method, path) {
        return Ok(rest);
    }
    if http_method.eq_ignore_ascii_case("POST") && is_json(content_type) {
        return Ok(Head::JsonPost);
    }
    Ok(Head::Other)
}

fn classify_rest(http_method: &str, path: &str) -> Option<Head> {
    // The only methods an operation uses ("": any other, which matches none).
    let m = ["GET", "POST", "DELETE"].into_iter().find(|v| http_method.eq_ignore_ascii_case(v)).unwrap_or("");
    let segments: Vec<&str> = path.split('/').collect();
    // The segment `back` places before the last (0: the last), if there is one.
    let from_end = |back: usize| segments.len().checked_sub(back + 1).and_then(|i| segments.get(i)).copied();
    let last = from_end(0)?;
    // (method, task id, number of trailing segments forming the operation)
    let found: Option<(Method, Option<&str>, usize)> = match (m, last) {
        ("POST", "message:send") => Some((Method::SendMessage, None, 1)),
        ("POST", "message:stream") => Some((Method::SendStreamingMessage, None, 1)),
        ("GET", "extendedAgentCard") => Some((Method::GetExtendedAgentCard, None, 1)),
        ("GET", "card") if from_end(1) == Some("v1") => Some((Method::GetExtendedAgentCard, None, 1)),
        ("GET", "tasks") => Some((Method::ListTasks, None, 1)),
        _ if from_end(1) == Some("tasks") && !last.is_empty() => {
            if let Some(id) = last.strip_suffix(":cancel") {
                (m == "POST").then_some((Method::CancelTask, Some(id), 2))
            } else if let Some(id) = last.strip_suffix(":subscribe") {
                (m == "POST" || m == "GET").then_some((Method::SubscribeToTask, Some(id), 2))
            } else if m == "GET" && !last.contains(':') {
                Some((Method::GetTask, Some(last), 2))
            } else {
                None
            }
        }
        (_, "pushNotificationConfigs") if from_end(2) == Some("tasks") => match m {
            "POST" => Some((Method::CreateTaskPushNotificationConfig, from_end(1), 3)),
            "GET" => Some((Method::ListTaskPushNotificationConfigs, from_end(1), 3)),
            _ => None,
        },
        _ if from_end(1) == Some("pushNotificationConfigs") && from_end(3) == Some("tasks") => match m {
            "GET" => Some((Method::GetTaskPushNotificationConfig, from_end(2), 4)),
            "DELETE" => Some((Method::DeleteTaskPushNotificationConfig, from_end(2), 4)),
            _ => None,
        },
        _ => None,
    };
    let (method, task_id, op_len) = found?;
    if task_id.is_some_and(str::is_empty) {
        return None;
    }
    let base_segments = segments.get(..segments.len().checked_sub(op_len)?)?;
    let has_v1 = base_segments.last() == Some(&"v1");
    let mut base = base_segments.join("/");
    base.push('/');
    Some(Head::Rest { method, task_id: task_id.map(str::to_string), base: encode_path(&base), has_v1 })
}

/// A parsed JSON-RPC A2A call (borrowed from the request body).
#[derive(Debug)]
pub struct RpcCall<'a> {
    /// The method as sent.
    pub raw_method: Cow<'a, str>,
    pub method: Option<Method>,
    pub id: Option<&'a RawValue>,
    pub params: Option<&'a RawValue>,
}

#[derive(Debug)]
pub enum BodyClass {
    /// A JSON-RPC batch: A2A has none (the SDK refuses them, but nothing may pass unchecked).
    Batch,
    /// Not JSON at all, or an empty body: JSON-RPC `-32700` (Parse error), as the agent answers.
    Parse(String),
    /// JSON, but not a valid JSON-RPC request (a response included): `-32600`.
    Invalid { why: String, id: Option<Box<RawValue>> },
    /// A key repeated anywhere: the agent's parser may read another method or id than ours.
    Ambiguous { why: String, id: Option<Box<RawValue>> },
}

impl BodyClass {
    /// The request's id to answer with (`None`: `null`).
    pub fn into_id(self) -> Option<Box<RawValue>> {
        match self {
            BodyClass::Invalid { id, .. } | BodyClass::Ambiguous { id, .. } => id,
            BodyClass::Batch | BodyClass::Parse(_) => None,
        }
    }

    /// What a log line says about the refusal (`None`: nothing to add).
    pub fn detail(&self) -> Option<String> {
        match self {
            BodyClass::Batch => None,
            BodyClass::Parse(msg) => Some(format!("unparseable JSON-RPC: {msg}")),
            BodyClass::Invalid { why, .. } => Some(format!("invalid JSON-RPC: {why}")),
            BodyClass::Ambiguous { why, .. } => Some(format!("ambiguous request: {why}")),
        }
    }
}

/// The `id` of a refused JSON-RPC body, to echo in the error: JSON-RPC answers `null` only
/// when the id cannot be read (not JSON, not an object, the member repeated) or is not one a
/// request may carry (a string or a number: not `null`, an object, an array or a boolean).
fn readable_id(body: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(default, borrow)]
        id: Option<&'a RawValue>,
    }
    // Other members are skipped unread; a repeated `id` is an error (then: `null`).
    let only: IdOnly<'_> = serde_json::from_slice(body).ok()?;
    let id = only.id?;
    let first = id.get().as_bytes().first().copied()?;
    (first == b'"' || first == b'-' || first.is_ascii_digit()).then(|| id.to_owned())
}

/// Parses a JSON-RPC POST body into an A2A call, refusing duplicate keys in the same pass.
/// `Ok(call)` with `method: None` is a JSON-RPC request whose method is not A2A.
pub fn classify_rpc(body: &[u8]) -> Result<RpcCall<'_>, BodyClass> {
    let invalid = |why: &str| BodyClass::Invalid { why: why.to_string(), id: readable_id(body) };
    let parsed = match jsonrpc::parse_body_unique(body) {
        Ok(parsed) => parsed,
        Err(BodyError::Rpc(RpcParseError::Parse(why))) => return Err(BodyClass::Parse(why)),
        Err(BodyError::Rpc(e)) => return Err(invalid(e.message())),
        Err(BodyError::Ambiguous(why)) => return Err(BodyClass::Ambiguous { why, id: readable_id(body) }),
    };
    match parsed {
        Body::Single(env) => match env.kind() {
            Ok(Kind::Request) | Ok(Kind::Notification) => {
                let raw_method = env.method.unwrap_or(Cow::Borrowed(""));
                let method = Method::from_name(&raw_method);
                Ok(RpcCall { raw_method, method, id: env.id, params: env.params })
            }
            Ok(Kind::Response) => Err(invalid("a JSON-RPC response is not a request")),
            Err(e) => Err(invalid(e.message())),
        },
        Body::Batch(_) => Err(BodyClass::Batch),
    }
}

#[cfg(test)]
mod tests {
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
}

//! What a request is: an A2A JSON-RPC call (0.3 or 1.0 dialect), an HTTP+JSON (REST) call, an
//! agent-card fetch, or other traffic (a non-A2A POST to an agent is refused by `flow`). Paths
//! are classified percent-decoded, as the agent's server routes them. Pure: no host access.

use serde_json::value::RawValue;
use std::borrow::Cow;
use tollgate_core::wire::jsonrpc::{self, Body, BodyError, Kind, RpcParseError};
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
    /// gRPC (`grpc.rs`).
    Grpc,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::JsonRpc => "jsonrpc",
            Binding::Rest => "rest",
            Binding::Card => "card",
            Binding::Grpc => "grpc",
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
#[path = "classify_tests.rs"]
mod tests;

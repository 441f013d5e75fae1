//! MCP over Streamable HTTP, as a gateway reads it: protocol revisions, the HTTP-level
//! checks each revision implies, and what a JSON-RPC message targets (tool, prompt, resource).
//! Pure: never touches the host.

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use crate::args::Json;
use tollgate_core::wire::jsonrpc::{Envelope, Kind};

/// JSON-RPC / MCP error codes the filter answers with.
pub mod codes {
    pub use tollgate_core::reply::codes::*;
    /// MCP 2026-07-28: `Mcp-Method` / `Mcp-Name` disagree with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// MCP 2026-07-28: the request needs a client capability the client did not declare.
    pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
    /// MCP 2026-07-28: the `MCP-Protocol-Version` is not one the receiver supports
    /// (`data: {supported, requested}`).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// Tollgate (application-defined, outside JSON-RPC's reserved -32768..-32000): the
    /// gateway's policy denied the request (`explain` style).
    pub const FORBIDDEN: i64 = -31403;
    /// Tollgate (application-defined): a credential was presented but is not known, or an
    /// identity is required and none was presented.
    pub const UNAUTHORIZED: i64 = -31401;
    /// Tollgate (application-defined): a per-identity call rate limit refused the request
    /// (HTTP 429, `Retry-After`).
    pub const RATE_LIMITED: i64 = -31429;
}

/// The MCP protocol revisions the filter knows. The revision of a request is read from the
/// `MCP-Protocol-Version` header; without it, 2025-03-26 is assumed (as the spec says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Revision {
    R2024_11_05,
    R2025_03_26,
    R2025_06_18,
    R2025_11_25,
    R2026_07_28,
}

impl Revision {
    pub const DEFAULT: Revision = Revision::R2025_03_26;

    /// Every revision the filter knows, oldest first: the `supported` list of its -32022.
    pub const ALL: [Revision; 5] =
        [Revision::R2024_11_05, Revision::R2025_03_26, Revision::R2025_06_18, Revision::R2025_11_25, Revision::R2026_07_28];

    pub fn parse(value: &str) -> Option<Revision> {
        Some(match value.trim() {
            "2024-11-05" => Revision::R2024_11_05,
            "2025-03-26" => Revision::R2025_03_26,
            "2025-06-18" => Revision::R2025_06_18,
            "2025-11-25" => Revision::R2025_11_25,
            "2026-07-28" => Revision::R2026_07_28,
            _ => return None,
        })
    }

    /// The revision of a request from its `MCP-Protocol-Version` header; an unknown value is
    /// handed back (as the client wrote it) for the -32022 answer.
    pub fn from_header(value: Option<&str>) -> Result<Revision, &str> {
        match value {
            None => Ok(Revision::DEFAULT),
            Some(v) => Revision::parse(v).ok_or(v),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::R2024_11_05 => "2024-11-05",
            Revision::R2025_03_26 => "2025-03-26",
            Revision::R2025_06_18 => "2025-06-18",
            Revision::R2025_11_25 => "2025-11-25",
            Revision::R2026_07_28 => "2026-07-28",
        }
    }

    /// JSON-RPC batches (a top-level array) exist only up to 2025-03-26.
    pub fn allows_batches(self) -> bool {
        self <= Revision::R2025_03_26
    }

    /// GET (standalone SSE stream) and DELETE (end session) exist before 2026-07-28.
    pub fn has_get_and_delete(self) -> bool {
        self < Revision::R2026_07_28
    }

    /// 2026-07-28 requires `Mcp-Method` (and `Mcp-Name`) headers that mirror the body.
    pub fn has_routing_headers(self) -> bool {
        self >= Revision::R2026_07_28
    }

    /// `resources/subscribe` and `resources/unsubscribe` exist before 2026-07-28 (which
    /// replaced them with `subscriptions/listen`).
    pub fn has_resource_subscriptions(self) -> bool {
        self < Revision::R2026_07_28
    }

    /// The HTTP status a server answers a JSON-RPC error with. Before 2026-07-28 the error
    /// rides on 200; 2026-07-28 maps codes to statuses (the SDK's `ERROR_CODE_HTTP_STATUS`):
    /// -32601 is 404, the request errors 400, anything else (e.g. -32603) stays 200.
    pub fn error_status(self, code: i64) -> u32 {
        if self < Revision::R2026_07_28 {
            return 200;
        }
        match code {
            codes::METHOD_NOT_FOUND => 404,
            codes::PARSE_ERROR
            | codes::INVALID_REQUEST
            | codes::INVALID_PARAMS
            | codes::HEADER_MISMATCH
            | codes::MISSING_REQUIRED_CLIENT_CAPABILITY
            | codes::UNSUPPORTED_PROTOCOL_VERSION => 400,
            _ => 200,
        }
    }
}

/// What a message addresses besides its method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    None,
    Tool(Cow<'a, str>),
    Prompt(Cow<'a, str>),
    Resource(Cow<'a, str>),
}

impl Target<'_> {
    /// The name (or URI) if there is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::None => None,
            Target::Tool(n) | Target::Prompt(n) | Target::Resource(n) => Some(n),
        }
    }
}

/// One JSON-RPC message of a POST body, as MCP sees it.
#[derive(Debug)]
pub struct Message<'a> {
    pub kind: Kind,
    /// The id, raw JSON (requests and responses).
    pub id: Option<&'a RawValue>,
    /// Empty for responses.
    pub method: Cow<'a, str>,
    pub target: Target<'a>,
    /// `params.arguments` (tools/call, prompts/get): an object, read in the same pass as
    /// the params.
    pub arguments: Option<Json<'a>>,
}

/// Why a message was refused before any policy: a JSON-RPC code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: i64,
    pub message: String,
}

impl Invalid {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Invalid { code, message: message.into() }
    }
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    uri: Option<Cow<'a, str>>,
    /// Read by [`crate::args::parse`] (numbers as written, strings holding JSON).
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Clone, Copy)]
enum TargetKind {
    Tool,
    Prompt,
    Resource,
}

/// The common MCP methods as static names: an audit record keeps its message's method, and
/// for these need not copy it.
pub fn static_method(method: &str) -> Option<&'static str> {
    const METHODS: [&str; 25] = [
        "tools/call", "tools/list", "initialize", "notifications/initialized", "ping",
        "prompts/get", "prompts/list", "resources/read", "resources/list",
        "resources/templates/list", "resources/subscribe", "resources/unsubscribe",
        "completion/complete", "logging/setLevel", "notifications/cancelled",
        "notifications/progress", "notifications/roots/list_changed", "notifications/message",
        "notifications/resources/updated", "notifications/resources/list_changed",
        "notifications/tools/list_changed", "notifications/prompts/list_changed", "roots/list",
        "sampling/createMessage", "elicitation/create",
    ];
    METHODS.into_iter().find(|m| *m == method)
}

/// Which params key a method's target lives in at a revision: `tools/call` and `prompts/get`
/// name it, `resources/read` (and, before 2026-07-28, subscribe/unsubscribe) point at a URI.
/// At 2026-07-28 subscribe/unsubscribe are methods that do not exist: they target nothing
/// (a server answers -32601, 404), so the filter neither requires nor reads a URI for them.
fn target_kind(method: &str, revision: Revision) -> Option<TargetKind> {
    match method {
        "tools/call" => Some(TargetKind::Tool),
        "prompts/get" => Some(TargetKind::Prompt),
        "resources/read" => Some(TargetKind::Resource),
        "resources/subscribe" | "resources/unsubscribe" if revision.has_resource_subscriptions() => {
            Some(TargetKind::Resource)
        }
        _ => None,
    }
}

/// [`read_message_at`] at the default revision (2025-03-26).
pub fn read_message<'a>(envelope: &Envelope<'a>) -> Result<Message<'a>, Invalid> {
    read_message_at(envelope, Revision::DEFAULT)
}

/// Reads what a message targets at a revision. A request whose target is missing or not a
/// string is refused with -32602 (invalid params): a gateway that cannot tell what is called
/// must not forward it.
pub fn read_message_at<'a>(envelope: &Envelope<'a>, revision: Revision) -> Result<Message<'a>, Invalid> {
    let kind = envelope.kind().map_err(|e| Invalid::new(e.code(), e.message().to_string()))?;
    if kind == Kind::Response {
        return Ok(Message { kind, id: envelope.id, method: Cow::Borrowed(""), target: Target::None, arguments: None });
    }
    let params: Option<Params<'a>> = match envelope.params {
        Some(raw) if raw.get().trim_start().starts_with('{') => Some(
            serde_json::from_str(raw.get())
                .map_err(|e| Invalid::new(codes::INVALID_PARAMS, format!("invalid params: {e}")))?,
        ),
        Some(raw) if raw.get().trim() == "null" => None,
        Some(_) => return Err(Invalid::new(codes::INVALID_PARAMS, "params must be an object")),
        None => None,
    };
    targeted(kind, envelope.id, envelope.method.clone(), params, revision)
}

/// `params` read in the envelope's own pass, as [`read_message`] reads an object (anything
/// else fails the pass; such bodies are read again with raw params, for its answers).
pub struct ObjectParams<'a>(Params<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for ObjectParams<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
            type Value = ObjectParams<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("params as an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ObjectParams<'de>, A::Error> {
                Params::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ObjectParams)
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// [`read_parsed_message_at`] at the default revision (2025-03-26).
pub fn read_parsed_message<'a>(envelope: Envelope<'a, ObjectParams<'a>>) -> Result<Message<'a>, Invalid> {
    read_parsed_message_at(envelope, Revision::DEFAULT)
}

/// [`read_message_at`] of an envelope whose params were read in its own pass: the same answers.
pub fn read_parsed_message_at<'a>(envelope: Envelope<'a, ObjectParams<'a>>, revision: Revision) -> Result<Message<'a>, Invalid> {
    let kind = envelope.kind().map_err(|e| Invalid::new(e.code(), e.message().to_string()))?;
    if kind == Kind::Response {
        return Ok(Message { kind, id: envelope.id, method: Cow::Borrowed(""), target: Target::None, arguments: None });
    }
    targeted(kind, envelope.id, envelope.method, envelope.params.map(|p| p.0), revision)
}

/// A request or notification with what its params target.
fn targeted<'a>(
    kind: Kind,
    id: Option<&'a RawValue>,
    method: Option<Cow<'a, str>>,
    params: Option<Params<'a>>,
    revision: Revision,
) -> Result<Message<'a>, Invalid> {
    let mut message = Message { kind, id, method: method.unwrap_or(Cow::Borrowed("")), target: Target::None, arguments: None };
    let Some(params) = params else {
        return match target_kind(&message.method, revision) {
            Some(kind) => Err(missing_target(&message.method, kind)),
            None => Ok(message),
        };
    };
    if let Some(kind) = target_kind(&message.method, revision) {
        let value = match kind {
            TargetKind::Tool | TargetKind::Prompt => params.name,
            TargetKind::Resource => params.uri,
        };
        message.target = match value {
            Some(v) if !v.is_empty() => match kind {
                TargetKind::Tool => Target::Tool(v),
                TargetKind::Prompt => Target::Prompt(v),
                TargetKind::Resource => Target::Resource(v),
            },
            _ => return Err(missing_target(&message.method, kind)),
        };
    }
    // `"arguments": null` reads as absent.
    match params.arguments.map(|raw| crate::args::parse(raw.get())) {
        Some(Ok(args @ Json::Object(_))) => message.arguments = Some(args),
        Some(Ok(_)) => return Err(Invalid::new(codes::INVALID_PARAMS, "params.arguments must be an object")),
        Some(Err(e)) => return Err(Invalid::new(codes::INVALID_PARAMS, format!("invalid params.arguments: {e}"))),
        None => {}
    }
    Ok(message)
}

fn missing_target(method: &str, kind: TargetKind) -> Invalid {
    let key = match kind {
        TargetKind::Tool | TargetKind::Prompt => "name",
        TargetKind::Resource => "uri",
    };
    Invalid::new(codes::INVALID_PARAMS, format!("{method} requires params.{key}"))
}

/// Decodes an MCP header value: verbatim, or the `=?base64?...?=` form (standard alphabet,
/// canonical, UTF-8). A malformed encoded value is `None`, so it never matches the body.
pub fn decode_header_value(value: &str) -> Option<Cow<'_, str>> {
    let Some(payload) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Some(Cow::Borrowed(value));
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(payload).ok()?;
    if engine.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// 2026-07-28: `Mcp-Method` must equal the body's method and, for methods that name a
/// target, `Mcp-Name` must equal it (after base64 decoding). A missing header is refused
/// with the same code (-32020), its message saying "missing" rather than "does not match".
pub fn check_routing_headers(method_header: Option<&str>, name_header: Option<&str>, message: &Message<'_>) -> Result<(), Invalid> {
    if message.kind == Kind::Response {
        return Ok(());
    }
    // The headers are required on requests; a notification without them passes, one with
    // them must agree.
    if message.kind == Kind::Notification && method_header.is_none() {
        return Ok(());
    }
    let method = truncate(&message.method, 128);
    match method_header.map(str::trim) {
        None => {
            return Err(Invalid::new(codes::HEADER_MISMATCH, format!("Mcp-Method header is missing (the body's method is `{method}`)")));
        }
        Some(m) if m != message.method.as_ref() => {
            return Err(Invalid::new(codes::HEADER_MISMATCH, format!("Mcp-Method header does not match the body's method `{method}`")));
        }
        Some(_) => {}
    }
    if let Some(name) = message.target.name() {
        let Some(header) = name_header else {
            return Err(Invalid::new(codes::HEADER_MISMATCH, format!("Mcp-Name header is missing (required for {method})")));
        };
        if decode_header_value(header.trim()).as_deref() != Some(name) {
            return Err(Invalid::new(codes::HEADER_MISMATCH, "Mcp-Name header does not match the body"));
        }
    }
    Ok(())
}

pub use tollgate_core::text::{is_identity_encoding, is_sse as is_sse_content_type, truncate};

/// `Content-Type` is `application/json` (any parameters): what MCP requires of POSTs.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    tollgate_core::text::media_type_is(value, "application/json")
}

/// A session id as recorded: visible ASCII only, at most 128 characters.
pub fn session_id(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    if v.is_empty() || !v.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    Some(truncate(v, 128).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::wire::jsonrpc::parse_body;

    fn one(body: &str) -> Result<(Kind, String, Option<String>, Option<String>), Invalid> {
        let parsed = parse_body(body.as_bytes()).unwrap();
        let m = read_message(&parsed.messages()[0])?;
        let arguments = m.arguments.map(|a| {
            let mut out = Vec::new();
            a.write_canonical(&mut out);
            String::from_utf8(out).unwrap()
        });
        Ok((m.kind, m.method.to_string(), m.target.name().map(String::from), arguments))
    }

    type Read = Result<(Kind, String, Option<String>, Option<String>), Invalid>;

    fn summary(m: Result<Message<'_>, Invalid>) -> Read {
        let m = m?;
        let arguments = m.arguments.map(|a| {
            let mut out = Vec::new();
            a.write_canonical(&mut out);
            String::from_utf8(out).unwrap()
        });
        Ok((m.kind, m.method.to_string(), m.target.name().map(String::from), arguments))
    }

    #[test]
    fn params_read_in_the_envelope_pass_read_as_raw_params() {
        let mut one_pass = 0;
        for params in [
            None,
            Some("null"),
            Some("{}"),
            Some(r#"{"name":"add","arguments":{"b":[1,{"y":null,"x":"\u0041"}],"a":1}}"#),
            Some(r#"{"name":"add","arguments":null}"#),
            Some(r#"{"name":"add","arguments":[1]}"#),
            Some(r#"{"name":"add","arguments":"x"}"#),
            Some(r#"{"name":""}"#),
            Some(r#"{"name":5}"#),
            Some(r#"{"name":null,"uri":"file:///a"}"#),
            Some(r#"{"na\u006de":"del\u0065te","_meta":{"progressToken":1}}"#),
            Some(r#"{"uri":"file:///x","name":"n","extra":[{"name":5}]}"#),
            Some(r#"["add"]"#),
            Some(r#""x""#),
            Some("7"),
        ] {
            for method in ["tools/call", "prompts/get", "resources/read", "ping", "notifications/x"] {
                for head in [r#""jsonrpc":"2.0","id":1"#, r#""jsonrpc":"2.0""#, r#""jsonrpc":"2.0","id":null"#, r#""jsonrpc":"1.0","id":1"#] {
                    let params = params.map(|p| format!(r#","params":{p}"#)).unwrap_or_default();
                    let body = format!(r#"{{{head},"method":"{method}"{params}}}"#);
                    let raw = parse_body(body.as_bytes()).unwrap();
                    let expected = summary(read_message(&raw.messages()[0]));
                    if let Ok(parsed) = tollgate_core::wire::jsonrpc::parse_body_unique_as::<ObjectParams<'_>>(body.as_bytes()) {
                        one_pass += 1;
                        let got = summary(read_parsed_message(parsed.into_messages().next().unwrap()));
                        assert_eq!(got, expected, "{body}");
                    }
                }
            }
        }
        // Responses carry no params MCP reads.
        for body in [r#"{"jsonrpc":"2.0","id":1,"result":{},"params":{"name":5}}"#, r#"{"jsonrpc":"2.0","id":1,"result":{},"params":{"name":"x"}}"#] {
            let raw = parse_body(body.as_bytes()).unwrap();
            let expected = summary(read_message(&raw.messages()[0]));
            if let Ok(parsed) = tollgate_core::wire::jsonrpc::parse_body_unique_as::<ObjectParams<'_>>(body.as_bytes()) {
                assert_eq!(summary(read_parsed_message(parsed.into_messages().next().unwrap())), expected, "{body}");
            }
        }
        assert!(one_pass > 150, "{one_pass}");
    }

    #[test]
    fn revisions() {
        assert_eq!(Revision::from_header(None), Ok(Revision::R2025_03_26));
        assert_eq!(Revision::from_header(Some("2026-07-28")), Ok(Revision::R2026_07_28));
        assert_eq!(Revision::from_header(Some("2099-01-01")), Err("2099-01-01"));
        assert!(Revision::R2025_03_26.allows_batches());
        assert!(!Revision::R2025_06_18.allows_batches());
        assert!(Revision::R2025_11_25.has_get_and_delete());
        assert!(!Revision::R2026_07_28.has_get_and_delete());
        assert!(Revision::R2026_07_28.has_routing_headers());
    }

    #[test]
    fn targets_and_arguments() {
        let (k, m, t, a) = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#).unwrap();
        assert_eq!((k, m.as_str(), t.as_deref(), a.as_deref()), (Kind::Request, "tools/call", Some("add"), Some(r#"{"a":1,"b":2}"#)));
        let (_, _, t, _) = one(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greeting","arguments":{"name":"x"}}}"#).unwrap();
        assert_eq!(t.as_deref(), Some("greeting"));
        let (_, _, t, _) = one(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#).unwrap();
        assert_eq!(t.as_deref(), Some("file:///a"));
        let (k, _, t, _) = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!((k, t), (Kind::Notification, None));
        let (k, m, _, _) = one(r#"{"jsonrpc":"2.0","id":"s1","result":{"content":[]}}"#).unwrap();
        assert_eq!((k, m.as_str()), (Kind::Response, ""));
        // Escaped names are decoded before matching.
        let (_, _, t, _) = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"del\u0065te_row"}}"#).unwrap();
        assert_eq!(t.as_deref(), Some("delete_row"));
    }

    #[test]
    fn missing_or_bad_targets_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#,
        ] {
            assert_eq!(one(body).unwrap_err().code, codes::INVALID_PARAMS, "{body}");
        }
        assert_eq!(one(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).unwrap_err().code, codes::INVALID_REQUEST);
    }

    #[test]
    fn subscriptions_target_a_resource_only_where_they_exist() {
        for method in ["resources/subscribe", "resources/unsubscribe"] {
            for body in [
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":"file:///a"}}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{}}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#),
            ] {
                let parsed = parse_body(body.as_bytes()).unwrap();
                let envelope = &parsed.messages()[0];
                for revision in Revision::ALL {
                    let read = read_message_at(envelope, revision);
                    if revision.has_resource_subscriptions() {
                        match read {
                            Ok(m) => assert_eq!(m.target, Target::Resource(Cow::Borrowed("file:///a")), "{body}"),
                            Err(r) => assert_eq!((r.code, body.contains("uri")), (codes::INVALID_PARAMS, false), "{body}"),
                        }
                    } else {
                        assert_eq!(read.unwrap().target, Target::None, "{body}");
                    }
                }
            }
        }
        assert_eq!(Revision::R2026_07_28.error_status(codes::METHOD_NOT_FOUND), 404);
        assert_eq!(Revision::R2026_07_28.error_status(codes::INVALID_PARAMS), 400);
        assert_eq!(Revision::R2026_07_28.error_status(codes::INTERNAL_ERROR), 200);
        assert_eq!(Revision::R2025_11_25.error_status(codes::METHOD_NOT_FOUND), 200);
    }

    #[test]
    fn routing_headers() {
        let body = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9"}}"#).unwrap();
        let m = read_message(&body.messages()[0]).unwrap();
        assert!(check_routing_headers(Some("tools/call"), Some("=?base64?Y2Fmw6k=?="), &m).is_ok());
        assert_eq!(check_routing_headers(Some("tools/list"), Some("=?base64?Y2Fmw6k=?="), &m).unwrap_err().code, codes::HEADER_MISMATCH);
        assert!(check_routing_headers(Some("tools/call"), Some("cafe"), &m).is_err());
        // Missing is said as missing (same code), not as a mismatch.
        let missing_name = check_routing_headers(Some("tools/call"), None, &m).unwrap_err();
        assert_eq!((missing_name.code, missing_name.message.as_str()), (codes::HEADER_MISMATCH, "Mcp-Name header is missing (required for tools/call)"));
        let missing_method = check_routing_headers(None, Some("=?base64?Y2Fmw6k=?="), &m).unwrap_err();
        assert_eq!(
            (missing_method.code, missing_method.message.as_str()),
            (codes::HEADER_MISMATCH, "Mcp-Method header is missing (the body's method is `tools/call`)")
        );
        let wrong = check_routing_headers(Some("tools/list"), Some("=?base64?Y2Fmw6k=?="), &m).unwrap_err();
        assert_eq!(wrong.message, "Mcp-Method header does not match the body's method `tools/call`");
        assert_eq!(check_routing_headers(Some("tools/call"), Some("cafe"), &m).unwrap_err().message, "Mcp-Name header does not match the body");
        // Non-canonical base64 never matches.
        assert!(check_routing_headers(Some("tools/call"), Some("=?base64?Y2Fmw6l=?="), &m).is_err());
        let body = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        let m = read_message(&body.messages()[0]).unwrap();
        assert!(check_routing_headers(Some("tools/list"), None, &m).is_ok());
        let body = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#).unwrap();
        let m = read_message(&body.messages()[0]).unwrap();
        assert!(check_routing_headers(None, None, &m).is_ok());
        assert!(check_routing_headers(Some("notifications/progress"), None, &m).is_err());
    }

    #[test]
    fn header_value_forms() {
        assert_eq!(decode_header_value("add").as_deref(), Some("add"));
        assert_eq!(decode_header_value("=?base64?YWRk?=").as_deref(), Some("add"));
        assert_eq!(decode_header_value("=?base64?!!?="), None);
        assert!(is_json_content_type(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(None));
        assert!(is_sse_content_type(Some("text/event-stream")));
        for v in [None, Some(""), Some("TEXT/Event-Stream ; charset=x"), Some(" application/json"), Some("application/jsonx"), Some("application/json;"), Some("ApplicatioN/JSON\t")] {
            let core = tollgate_core::text::media_type(v);
            assert_eq!(is_json_content_type(v), core.as_deref() == Some("application/json"), "{v:?}");
            assert_eq!(is_sse_content_type(v), core.as_deref() == Some("text/event-stream"), "{v:?}");
        }
        assert!(is_identity_encoding(None));
        assert!(is_identity_encoding(Some("identity")));
        assert!(!is_identity_encoding(Some("gzip")));
        assert!(!is_identity_encoding(Some("identity, br")));
        assert_eq!(session_id(Some("abc")), Some("abc".into()));
        assert_eq!(session_id(Some("a b")), None);
    }
}

//! Reading and rewriting server responses: list results (`tools/list`, `prompts/list`,
//! `resources/list`, `resources/templates/list`) keep only the items the caller may use,
//! everything else in the message (pagination `nextCursor`, `_meta`, unknown fields) is kept
//! byte for byte; tool results report `isError`. Works on one JSON-RPC message at a time, so
//! the filter can apply it to a JSON body (object or batch array) or to each SSE event.

use tollgate_core::wire::raw_object::RawMembers;
use tollgate_core::wire::raw_object::Key;
use crate::message::Target;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    pub fn from_method(method: &str) -> Option<ListKind> {
        Some(match method {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::ResourceTemplates,
            _ => return None,
        })
    }

    /// The result key holding the items.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The method an item is judged as (a call of the listed thing).
    pub fn use_method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/call",
            ListKind::Prompts => "prompts/get",
            ListKind::Resources | ListKind::ResourceTemplates => "resources/read",
        }
    }

    fn target(self, item: Item<'_>) -> Option<Target<'_>> {
        Some(match self {
            ListKind::Tools => Target::Tool(item.name?),
            ListKind::Prompts => Target::Prompt(item.name?),
            ListKind::Resources => Target::Resource(item.uri?),
            // A template is judged by its template string (`file:///data/{name}` matches
            // the glob `file:///data/*`).
            ListKind::ResourceTemplates => Target::Resource(item.uri_template?),
        })
    }

    /// Guesses a list result by its shape, for responses whose request the filter did not
    /// see (e.g. replayed on a resumed GET stream).
    fn guess(result: &RawMembers<'_>) -> Option<ListKind> {
        [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::ResourceTemplates]
            .into_iter()
            .find(|k| result.0.iter().any(|(key, v)| key == k.key() && v.get().trim_start().starts_with('[')))
    }
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    uri: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "uriTemplate")]
    uri_template: Option<Cow<'a, str>>,
}

/// A JSON-RPC message from the server, borrowed.
#[derive(Debug, Deserialize)]
pub struct ServerMessage<'a> {
    #[serde(default, borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub error: Option<&'a RawValue>,
}

impl<'a> ServerMessage<'a> {
    pub fn parse(text: &'a str) -> Option<ServerMessage<'a>> {
        serde_json::from_str(text).ok()
    }

    /// A response (result or error), not a server request or notification.
    pub fn is_response(&self) -> bool {
        self.method.is_none() && (self.result.is_some() || self.error.is_some())
    }

    /// `result.isError` of a tool result (false when absent); `None` if not a result object.
    pub fn is_error(&self) -> Option<bool> {
        #[derive(Deserialize)]
        struct ToolResult {
            #[serde(default, rename = "isError")]
            is_error: Option<bool>,
        }
        let r: ToolResult = serde_json::from_str(self.result?.get()).ok()?;
        Some(r.is_error.unwrap_or(false))
    }

    /// `error.code` of an error response.
    pub fn error_code(&self) -> Option<i64> {
        error_code(self.error?)
    }
}

fn error_code(error: &RawValue) -> Option<i64> {
    #[derive(Deserialize)]
    struct ErrorObject {
        code: i64,
    }
    serde_json::from_str::<ErrorObject>(error.get()).ok().map(|e| e.code)
}

/// A request id in a comparable form: strings decoded (`"x\u0031"` is `"x1"`); numbers by
/// value as IEEE-754 doubles, what JavaScript and most JSON libraries make of them (`1`,
/// `1.0`, `1e0` are one id, and so are integers past 2^53 that round to the same double);
/// a string is never a number (`"1"` is not `1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdKey<'a> {
    Str(Cow<'a, str>),
    /// The double's bits (-0 taken as 0): equal bits, equal values (never NaN from JSON).
    Num(u64),
    /// Anything else, as written.
    Other(Cow<'a, str>),
}

impl IdKey<'_> {
    pub fn into_owned(self) -> IdKey<'static> {
        match self {
            IdKey::Str(s) => IdKey::Str(Cow::Owned(s.into_owned())),
            IdKey::Num(n) => IdKey::Num(n),
            IdKey::Other(s) => IdKey::Other(Cow::Owned(s.into_owned())),
        }
    }
}

/// The [`IdKey`] of a raw id, borrowing from it unless the string has escapes.
pub fn id_key(id: &RawValue) -> IdKey<'_> {
    let text = id.get().trim();
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // A raw JSON string without a backslash reads as it is written.
        if !inner.contains('\\') {
            return IdKey::Str(Cow::Borrowed(inner));
        }
        if let Ok(s) = serde_json::from_str::<String>(text) {
            return IdKey::Str(Cow::Owned(s));
        }
    }
    let number = text.bytes().next().is_some_and(|b| b == b'-' || b.is_ascii_digit());
    if let (true, Ok(n)) = (number, text.parse::<f64>()) {
        let n = if n == 0.0 { 0.0 } else { n };
        return IdKey::Num(n.to_bits());
    }
    IdKey::Other(Cow::Borrowed(text))
}

/// What the filter reads in a response's `result`: [`ServerMessage::is_error`], and the
/// list it has the shape of (`tools`, `prompts`, `resources` or `resourceTemplates` as an
/// array), for responses not known to answer a list request (an unknown id, or an id the
/// server took for another request's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultSummary {
    pub is_error: Option<bool>,
    pub shape: Option<ListKind>,
}

impl ServerMessage<'_> {
    /// [`ServerMessage::is_error`] and the list shape in one pass over the result's members
    /// (a tool result is read once, not once per question), with the same answers as reading
    /// each on its own (the tests' `list_shape`).
    pub fn summary(&self) -> ResultSummary {
        let Some(result) = self.result else { return ResultSummary { is_error: None, shape: None } };
        if !result.get().starts_with('{') {
            // Not an object: no list shape; `isError` as serde reads a struct from an array.
            return ResultSummary { is_error: self.is_error(), shape: None };
        }
        match serde_json::from_str::<Members>(result.get()) {
            Ok(m) => m.summary(),
            // A key serde cannot read (e.g. an unpaired surrogate) fails both readings.
            Err(_) => ResultSummary { is_error: None, shape: None },
        }
    }
}

/// A server message read in one pass: [`ServerMessage`] with its `result` read as
/// [`ServerMessage::summary`] reads it, instead of kept raw to be read again. Stricter
/// than [`ServerMessage::parse`] (a result that is not an object, or holds a key serde
/// cannot read, fails it): callers then read the message as [`ServerMessage`].
#[derive(Deserialize)]
pub struct ResponseHead<'a> {
    #[serde(default, borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    result: Option<Members<'a>>,
    #[serde(default, borrow)]
    pub error: Option<&'a RawValue>,
}

impl<'a> ResponseHead<'a> {
    pub fn parse(text: &'a str) -> Option<ResponseHead<'a>> {
        serde_json::from_str(text).ok()
    }

    /// As [`ServerMessage::is_response`].
    pub fn is_response(&self) -> bool {
        self.method.is_none() && (self.result.is_some() || self.error.is_some())
    }

    /// A `result` member (else the response is an error).
    pub fn has_result(&self) -> bool {
        self.result.is_some()
    }

    /// As [`ServerMessage::summary`].
    pub fn summary(&self) -> ResultSummary {
        self.result.as_ref().map_or(ResultSummary { is_error: None, shape: None }, Members::summary)
    }

    /// As [`ServerMessage::error_code`].
    pub fn error_code(&self) -> Option<i64> {
        error_code(self.error?)
    }
}

enum IsError<'a> {
    Absent,
    /// The raw value.
    Once(&'a str),
    Repeated,
}

/// The members of a result object the filter looks at.
struct Members<'a> {
    is_error: IsError<'a>,
    /// Per [`ListKind`]: some member of its key holds an array.
    arrays: [bool; 4],
}

impl Members<'_> {
    fn summary(&self) -> ResultSummary {
        ResultSummary {
            // `isError` twice is refused as a duplicate field; absent or null is false.
            is_error: match self.is_error {
                IsError::Absent => Some(false),
                IsError::Once(v) => match v {
                    "true" => Some(true),
                    "false" | "null" => Some(false),
                    _ => None,
                },
                IsError::Repeated => None,
            },
            shape: [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::ResourceTemplates]
                .into_iter()
                .find(|k| self.arrays.get(*k as usize).copied().unwrap_or(false)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> serde::de::Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Members { is_error: IsError::Absent, arrays: [false; 4] };
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let kind = match key.as_ref() {
                        "isError" => {
                            let value: &'de RawValue = map.next_value()?;
                            members.is_error = match members.is_error {
                                IsError::Absent => IsError::Once(value.get()),
                                _ => IsError::Repeated,
                            };
                            continue;
                        }
                        "tools" => ListKind::Tools,
                        "prompts" => ListKind::Prompts,
                        "resources" => ListKind::Resources,
                        "resourceTemplates" => ListKind::ResourceTemplates,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value: &'de RawValue = map.next_value()?;
                    if value.get().trim_start().starts_with('[') {
                        if let Some(seen) = members.arrays.get_mut(kind as usize) {
                            *seen = true;
                        }
                    }
                }
                Ok(members)
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// The result of filtering one list response.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The new message text.
    pub text: String,
    /// Items removed.
    pub hidden: usize,
}

/// Filters the list in one JSON-RPC response. `kind` None: guess from the result's shape.
/// Returns `Ok(None)` when there is nothing to filter (an error response, no list in it, or
/// nothing hidden). `Err` when a list result cannot be read: the caller must not pass it.
pub fn filter_list(
    message: &ServerMessage<'_>,
    kind: Option<ListKind>,
    keep: &mut dyn FnMut(ListKind, &Target<'_>) -> bool,
) -> Result<Option<Rewritten>, String> {
    let Some(result) = message.result else { return Ok(None) };
    let pairs: RawMembers<'_> = match serde_json::from_str(result.get()) {
        Ok(p) => p,
        Err(e) if kind.is_some() => return Err(format!("list result is not an object: {e}")),
        Err(_) => return Ok(None),
    };
    let Some(kind) = kind.or_else(|| ListKind::guess(&pairs)) else { return Ok(None) };
    let mut hidden = 0usize;
    let mut out = String::with_capacity(result.get().len());
    out.push('{');
    for (i, (key, value)) in pairs.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).map_err(|e| e.to_string())?);
        out.push(':');
        if key != kind.key() {
            out.push_str(value.get());
            continue;
        }
        let items: Vec<&RawValue> =
            serde_json::from_str(value.get()).map_err(|e| format!("`{}` is not an array: {e}", kind.key()))?;
        out.push('[');
        let mut first = true;
        for raw in items {
            // An item the filter cannot name is dropped: fail closed.
            let shown = serde_json::from_str::<Item<'_>>(raw.get())
                .ok()
                .and_then(|item| kind.target(item))
                .is_some_and(|target| keep(kind, &target));
            if !shown {
                hidden += 1;
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(raw.get());
        }
        out.push(']');
    }
    out.push('}');
    if hidden == 0 {
        return Ok(None);
    }
    let mut text = String::with_capacity(out.len() + 64);
    text.push_str(r#"{"jsonrpc":"2.0","id":"#);
    text.push_str(message.id.map(|i| i.get()).unwrap_or("null"));
    text.push_str(r#","result":"#);
    text.push_str(&out);
    text.push('}');
    Ok(Some(Rewritten { text, hidden }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list shape read on its own, as [`ServerMessage::summary`] must answer it.
    fn list_shape(message: &ServerMessage<'_>) -> Option<ListKind> {
        let pairs: RawMembers<'_> = serde_json::from_str(message.result?.get()).ok()?;
        ListKind::guess(&pairs)
    }

    fn keep_only<'n>(names: &'n [&'n str]) -> impl FnMut(ListKind, &Target<'_>) -> bool + 'n {
        move |_, t| t.name().is_some_and(|n| names.contains(&n))
    }

    #[test]
    fn tools_list_keeps_cursor_and_unknown_fields() {
        let body = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"add","inputSchema":{"type":"object"}},{"name":"admin_reset","x":[1,2]},{"name":"echo"}],"nextCursor":"abc","_meta":{"k":1}}}"#;
        let m = ServerMessage::parse(body).unwrap();
        let out = filter_list(&m, Some(ListKind::Tools), &mut keep_only(&["add", "echo"])).unwrap().unwrap();
        assert_eq!(out.hidden, 1);
        assert_eq!(
            out.text,
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"add","inputSchema":{"type":"object"}},{"name":"echo"}],"nextCursor":"abc","_meta":{"k":1}}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out.text).unwrap();
        assert_eq!(v["result"]["nextCursor"], "abc");
    }

    #[test]
    fn nothing_hidden_means_unchanged() {
        let body = r#"{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"add"}]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        assert_eq!(filter_list(&m, Some(ListKind::Tools), &mut keep_only(&["add"])).unwrap(), None);
    }

    #[test]
    fn nameless_items_and_duplicate_keys_are_filtered() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"no name"},{"name":5},{"name":"add"}],"tools":[{"name":"secret"}]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        let out = filter_list(&m, Some(ListKind::Tools), &mut keep_only(&["add"])).unwrap().unwrap();
        assert_eq!(out.hidden, 3);
        assert!(!out.text.contains("secret"));
        assert!(!out.text.contains("no name"));
    }

    #[test]
    fn resources_prompts_and_templates() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///data/a","name":"a"},{"uri":"file:///secret/b","name":"b"}]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        let mut keep = |_: ListKind, t: &Target<'_>| matches!(t, Target::Resource(u) if u.starts_with("file:///data/"));
        let out = filter_list(&m, Some(ListKind::Resources), &mut keep).unwrap().unwrap();
        assert!(out.text.contains("file:///data/a") && !out.text.contains("secret"));
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"file:///secret/{x}","name":"t"}]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        let out = filter_list(&m, Some(ListKind::ResourceTemplates), &mut keep).unwrap().unwrap();
        assert_eq!(out.hidden, 1);
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"greeting"},{"name":"other"}]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        let mut keep = |k: ListKind, t: &Target<'_>| k == ListKind::Prompts && matches!(t, Target::Prompt(n) if n == "greeting");
        assert_eq!(filter_list(&m, Some(ListKind::Prompts), &mut keep).unwrap().unwrap().hidden, 1);
    }

    #[test]
    fn shape_guessing_and_errors() {
        let body = r#"{"jsonrpc":"2.0","id":99,"result":{"tools":[{"name":"x"}]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        assert_eq!(filter_list(&m, None, &mut keep_only(&[])).unwrap().unwrap().hidden, 1);
        let body = r#"{"jsonrpc":"2.0","id":99,"result":{"content":[]}}"#;
        let m = ServerMessage::parse(body).unwrap();
        assert_eq!(filter_list(&m, None, &mut keep_only(&[])).unwrap(), None);
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"x"}}}"#;
        let m = ServerMessage::parse(body).unwrap();
        assert!(filter_list(&m, Some(ListKind::Tools), &mut keep_only(&[])).is_err());
        let body = r#"{"jsonrpc":"2.0","id":1,"result":[1]}"#;
        let m = ServerMessage::parse(body).unwrap();
        assert!(filter_list(&m, Some(ListKind::Tools), &mut keep_only(&[])).is_err());
        let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}}"#;
        let m = ServerMessage::parse(body).unwrap();
        assert_eq!(filter_list(&m, Some(ListKind::Tools), &mut keep_only(&[])).unwrap(), None);
        assert_eq!(m.error_code(), Some(-32601));
    }

    #[test]
    fn tool_results_and_ids() {
        let m = ServerMessage::parse(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"isError":true}}"#).unwrap();
        assert!(m.is_response());
        assert_eq!(m.is_error(), Some(true));
        let m = ServerMessage::parse(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#).unwrap();
        assert_eq!(m.is_error(), Some(false));
        let m = ServerMessage::parse(r#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}"#).unwrap();
        assert!(!m.is_response());
        let a: Box<RawValue> = serde_json::from_str(r#""x\u0031""#).unwrap();
        let b: Box<RawValue> = serde_json::from_str(r#""x1""#).unwrap();
        let c: Box<RawValue> = serde_json::from_str("1").unwrap();
        assert_eq!(id_key(&a), id_key(&b));
        assert_ne!(id_key(&b), id_key(&c));
    }

    #[test]
    fn numeric_ids_compare_by_value() {
        let key = |t: &str| id_key(&serde_json::from_str::<Box<RawValue>>(t).unwrap()).into_owned();
        for same in ["1.0", "1e0", "1E+0", "10e-1", "0.1e1", "1.000"] {
            assert_eq!(key(same), key("1"), "{same}");
        }
        assert_eq!(key("-0"), key("0"));
        assert_eq!(key("0.0e5"), key("0"));
        assert_eq!(key("9007199254740993"), key("9007199254740992"));
        assert_eq!(key("1e400"), key("2e400"));
        assert_ne!(key("1"), key("\"1\""));
        assert_ne!(key("1"), key("2"));
        assert_ne!(key("1"), key("-1"));
        assert_ne!(key("1.5"), key("1"));
        assert_ne!(key("\"1.0\""), key("\"1\""));
    }

    #[test]
    fn list_shapes() {
        let shape = |t: &str| list_shape(&ServerMessage::parse(t).unwrap());
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#), Some(ListKind::Tools));
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"_meta":{},"prompts":[{"name":"x"}]}}"#), Some(ListKind::Prompts));
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[]}}"#), Some(ListKind::Resources));
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[]}}"#), Some(ListKind::ResourceTemplates));
        // A duplicate key does not hide the array.
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":"x","tools":[]}}"#), Some(ListKind::Tools));
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#), None);
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":"x"}}"#), None);
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"result":[]}"#), None);
        assert_eq!(shape(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#), None);
    }

    #[test]
    fn one_reading_of_a_result_answers_as_the_two_did() {
        for result in [
            r#"{"content":[{"type":"text","text":"x"}],"isError":false}"#,
            r#"{"content":[],"isError":true}"#,
            r#"{"content":[]}"#,
            r#"{"isError":null}"#,
            r#"{"isError":"yes"}"#,
            r#"{"isError":1}"#,
            r#"{"isError":true,"isError":false}"#,
            r#"{"is\u0045rror":true}"#,
            r#"{"\ud800":1,"isError":true}"#,
            r#"{"tools":"x","tools":[]}"#,
            r#"{"tools":{"a":[]}}"#,
            r#"{"prompts":[],"tools":[{"name":"a"}],"isError":true}"#,
            r#"{"resourceTemplates":[],"resources":[]}"#,
            r#"{"to\u006fls":[]}"#,
            r#"{"_meta":{"tools":[]},"resourceTemplates":[]}"#,
            r#"{}"#,
            r#"[true]"#,
            r#"[false]"#,
            r#"[]"#,
            r#"[null]"#,
            r#"[1]"#,
            r#"[true,1]"#,
            r#""text""#,
            r#"null"#,
            r#"5"#,
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
            let m = ServerMessage::parse(&body).unwrap();
            assert_eq!(m.summary(), ResultSummary { is_error: m.is_error(), shape: list_shape(&m) }, "{result}");
        }
        let m = ServerMessage::parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#).unwrap();
        assert_eq!(m.summary(), ResultSummary { is_error: None, shape: None });
    }

    #[test]
    fn a_message_read_once_reads_as_read_twice() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}],"isError":false}}"#,
            r#"{"jsonrpc":"2.0","id":"a\u0062","result":{"tools":[{"name":"x"}],"nextCursor":"c"},"_meta":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":null,"error":{"code":-32601,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"[7,null,{"tools":[]}]"#,
        ] {
            let (head, m) = (ResponseHead::parse(body).unwrap(), ServerMessage::parse(body).unwrap());
            assert_eq!(head.id.map(|i| i.get()), m.id.map(|i| i.get()), "{body}");
            assert_eq!((head.is_response(), head.summary(), head.error_code()), (m.is_response(), m.summary(), m.error_code()), "{body}");
        }
        // Stricter: what it cannot read is read as a ServerMessage instead.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"result":[true]}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"\ud800":1,"tools":[]}}"#,
        ] {
            assert!(ResponseHead::parse(body).is_none() && ServerMessage::parse(body).is_some(), "{body}");
        }
        for body in [r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#, "5", "{"] {
            assert!(ResponseHead::parse(body).is_none() && ServerMessage::parse(body).is_none(), "{body}");
        }
    }

    #[test]
    fn string_ids_borrow_unless_escaped() {
        let raw = |t: &str| serde_json::from_str::<Box<RawValue>>(t).unwrap();
        let (plain, escaped) = (raw(r#""abc""#), raw(r#""a\u0062c""#));
        assert!(matches!(id_key(&plain), IdKey::Str(Cow::Borrowed("abc"))));
        assert_eq!(id_key(&escaped), id_key(&plain));
        assert_eq!(id_key(&raw("null")), IdKey::Other(Cow::Borrowed("null")));
        assert_ne!(id_key(&raw(r#""\"""#)), id_key(&raw(r#""\\""#)));
    }

}

//! Reading and rewriting server responses: list results (`tools/list`, `prompts/list`,
//! `resources/list`, `resources/templates/list`) keep only the items the caller may use,
//! everything else in the message (pagination `nextCursor`, `_meta`, unknown fields) is kept
//! byte for byte; tool results report `isError`. Works on one JSON-RPC message at a time, so
//! the filter can apply it to a JSON body (object or batch array) or to each SSE event.

use tollgate_core::raw_object::RawMembers;
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
        #[derive(Deserialize)]
        struct ErrorObject {
            code: i64,
        }
        serde_json::from_str::<ErrorObject>(self.error?.get()).ok().map(|e| e.code)
    }
}

/// A request id in a comparable form: strings decoded (`"x\u0031"` is `"x1"`); numbers by
/// value as IEEE-754 doubles, what JavaScript and most JSON libraries make of them (`1`,
/// `1.0`, `1e0` are one id, and so are integers past 2^53 that round to the same double);
/// a string is never a number (`"1"` is not `1`).
pub fn id_key(id: &RawValue) -> String {
    let text = id.get().trim();
    if text.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(text) {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('s');
            out.push_str(&s);
            return out;
        }
    }
    let number = text.bytes().next().is_some_and(|b| b == b'-' || b.is_ascii_digit());
    if let (true, Ok(n)) = (number, text.parse::<f64>()) {
        // -0 is 0; `{:?}` is the shortest text that reads back as the same double.
        let n = if n == 0.0 { 0.0 } else { n };
        return format!("n{n:?}");
    }
    let mut out = String::with_capacity(text.len() + 1);
    out.push('r');
    out.push_str(text);
    out
}

/// The list a response has the shape of: its `result` holds `tools`, `prompts`,
/// `resources` or `resourceTemplates` as an array. For responses that are not known to
/// answer a list request (an unknown id, or an id the server took for another request's).
pub fn list_shape(message: &ServerMessage<'_>) -> Option<ListKind> {
    let pairs: RawMembers<'_> = serde_json::from_str(message.result?.get()).ok()?;
    ListKind::guess(&pairs)
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

/// Canonical JSON of a value: object keys sorted (by UTF-8 bytes), no whitespace, strings
/// and numbers as serde_json writes them. Its SHA-256 is the audit digest of arguments.
pub fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                if let Some(v) = map.get(*k) {
                    canonical_json(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let key = |t: &str| id_key(&serde_json::from_str::<Box<RawValue>>(t).unwrap());
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
    fn canonical_form() {
        let mut out = String::new();
        canonical_json(&json!({"b": [1, {"z": 1, "a": "é"}], "a": null, "c": 1.5}), &mut out);
        assert_eq!(out, r#"{"a":null,"b":[1,{"a":"é","z":1}],"c":1.5}"#);
    }
}

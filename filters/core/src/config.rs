//! Plugin configuration: JSON, strictly typed, refused at load with the bad field named.

use serde::de::DeserializeOwned;

use crate::wire::json_scan::{Piece, StringBody};

/// A configuration error whose message names the field path, e.g.
/// `routes[1].provider: unknown field `clster`, expected one of ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn field(path: &str, message: impl std::fmt::Display) -> Self {
        ConfigError(format!("{path}: {message}"))
    }
}

/// Parses plugin configuration. An empty configuration parses as `{}` so every field's
/// default applies. The error names the path of the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError(format!("configuration is not UTF-8: {e}")))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| {
        let path = error_path(text, &e, &|probe| serde_json::from_str::<T>(probe).err());
        if path.is_empty() {
            ConfigError(format!("configuration: {e}"))
        } else {
            ConfigError(format!("{path}: {e}"))
        }
    })
}

/// The path (`limits[0].window`) of what `e` is about, named as serde_path_to_error names it,
/// from where in `text` serde_json stopped: just after the token the error is about.
///
/// A data error (the types') names the member being read there: an unknown field ends just
/// after its key; an invalid type or value just after the value (before its `[` or `{`, for an
/// array or object); `missing field` just after the object's `}`, which names the member
/// holding the object. An unknown variant or a duplicate field, ending after a key, names the
/// object rather than the key.
///
/// An error raised by a `Deserialize` impl (not by serde_json: `Window`'s "is not a window")
/// has no position until it leaves the array or object around its value: it ends just after
/// the value, or, for the last member, just after that array or object's closing bracket, as
/// the array or object's own errors (`missing field`) do. `reparse` tells which: with ` 0`
/// before that bracket, the last member's error ends before the ` 0` (the same error, now
/// naming that member), the array or object's own turns into a syntax error.
///
/// A syntax error ends just after the byte serde_json peeked at and refused (not read): the
/// path is that of the text before it. An error between values (a missing `,` or `:`, a
/// trailing comma, too many elements for a tuple) names the array or object; one in a value
/// (a bad escape, `tru`) or at its start (`expected value`: an enum given neither a string
/// nor an object, say) names the value.
fn error_path(text: &str, e: &serde_json::Error, reparse: &dyn Fn(&str) -> Option<serde_json::Error>) -> String {
    let syntax = matches!(e.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
    let message = message(e);
    let end = offset_of(text, e.line(), e.column());
    let read = text.as_bytes().get(..end).unwrap_or_default();
    let end = if syntax && peeked(read, &message) { end.saturating_sub(1) } else { end };
    let (mut frames, last) = scan(text.as_bytes().get(..end).unwrap_or_default());
    if !syntax && last == Last::Value {
        let bracket = end.saturating_sub(1);
        if let (Some(b'}' | b']'), Some(before), Some(after)) =
            (text.as_bytes().get(bracket), text.get(..bracket), text.get(bracket..))
        {
            let probe = format!("{before} 0{after}");
            if let Some(e) = reparse(&probe).filter(|p| self::message(p) == message) {
                return error_path(&probe, &e, reparse);
            }
        }
    }
    let name_container = if syntax {
        const BETWEEN_VALUES: [&str; 6] =
            ["expected `", "trailing c", "key must be a string", "EOF while parsing a list", "EOF while parsing an object", "expected value"];
        BETWEEN_VALUES.iter().any(|m| message.starts_with(m))
            && (matches!(last, Last::Value | Last::Key) || (last == Last::Comma && !message.starts_with("expected value")))
    } else {
        last == Last::Key && (message.starts_with("unknown variant") || message.starts_with("duplicate field"))
    };
    if name_container {
        match frames.last_mut() {
            Some(Frame::Object(key)) => *key = None,
            Some(Frame::Array(index)) => *index = None,
            None => {}
        }
    }
    let mut path = String::new();
    for frame in frames {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
            }
            Frame::Array(Some(index)) => path.push_str(&format!("[{index}]")),
            Frame::Object(None) | Frame::Array(None) => {}
        }
    }
    path
}

/// Whether the last byte of `read`, where serde_json raised a syntax error, is one it peeked
/// at and refused rather than read: so for all but one `expected value`, an enum's, raised
/// after its variant's value (`{"deny": {...}, "more": 1}`), not at a value's first byte (an
/// enum given `[`, `5` or `{}`).
fn peeked(read: &[u8], message: &str) -> bool {
    let Some((&last, before)) = read.split_last() else { return false };
    if !message.starts_with("expected value") {
        return true;
    }
    let before = before.trim_ascii_end();
    match last {
        b'}' => before.ends_with(b"{"),
        b']' | b'"' => false,
        _ if last.is_ascii_whitespace() => false,
        // A scalar's first byte, not its last.
        _ => matches!(before.last(), None | Some(b':' | b',' | b'[')),
    }
}

/// The error's message without its position.
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&position).map(str::to_string).unwrap_or(text)
}

/// The byte offset of serde_json's error position: `line` counts from 1, `column` is the
/// number of bytes of that line read so far. Line 0 means the error has no position.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start = match line {
        0 => return 0,
        1 => 0,
        _ => text.bytes().enumerate().filter(|&(_, b)| b == b'\n').nth(line - 2).map_or(text.len(), |(i, _)| i + 1),
    };
    line_start.saturating_add(column).min(text.len())
}

/// An array or object open at the end of the scanned text, with the member being read in it.
enum Frame {
    /// The key last read, until the next `,`.
    Object(Option<String>),
    /// The number of `,` read (from the `[` on, the first element is being read).
    Array(Option<usize>),
}

/// The last token of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    None,
    /// `{` or `[`.
    Open,
    Key,
    Colon,
    Comma,
    /// A scalar (or part of one) or a closing `}` or `]`.
    Value,
}

/// Follows the brackets, commas and strings of `bytes` (which serde_json has read: valid
/// JSON so far, so nothing more is checked).
fn scan(bytes: &[u8]) -> (Vec<Frame>, Last) {
    let mut frames: Vec<Frame> = Vec::new();
    let mut last = Last::None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'{' | b'[' => {
                frames.push(if b == b'{' { Frame::Object(None) } else { Frame::Array(Some(0)) });
                last = Last::Open;
            }
            b'}' | b']' => {
                frames.pop();
                last = Last::Value;
            }
            b',' => {
                match frames.last_mut() {
                    Some(Frame::Object(key)) => *key = None,
                    Some(Frame::Array(index)) => *index = index.map(|n| n + 1),
                    None => {}
                }
                last = Last::Comma;
            }
            b':' => last = Last::Colon,
            b'"' => {
                let start = i - 1;
                let mut body = StringBody::default();
                let closed = loop {
                    match body.next(bytes.get(i..).unwrap_or_default()) {
                        (_, 0) => break false,
                        (Piece::End, n) => {
                            i += n;
                            break true;
                        }
                        (_, n) => i += n,
                    }
                };
                last = Last::Value;
                // A string in an object with no key yet is the next key.
                if let (true, Some(Frame::Object(key @ None))) = (closed, frames.last_mut()) {
                    let raw = bytes.get(start..i).unwrap_or_default();
                    *key = Some(serde_json::from_slice(raw).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()));
                    last = Last::Key;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => last = Last::Value,
        }
    }
    (frames, last)
}

/// Validation after parsing: each filter's config implements it to check what types
/// cannot (globs, regexes, JSONPaths, cross references), naming the field on failure.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses then validates.
pub fn load<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ConfigError> {
    let config: T = parse(bytes)?;
    config.validate()?;
    Ok(config)
}

/// Bad variants of a valid configuration, for tests comparing the field paths [`parse`]
/// names with serde_path_to_error's (each filter's config tests, on its own `Config`): every
/// value replaced by values of other types and ranges, an unknown key added to and each key
/// removed from every object, written compact and pretty (several lines).
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "testing")))]
pub fn bad_variants(valid: &serde_json::Value) -> Vec<String> {
    use serde_json::{json, Value};
    // Pointers (RFC 6901) to every node, then one mutation at a time on a fresh copy.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    pointers(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    pointers(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut at = Vec::new();
    pointers(valid, String::new(), &mut at);
    let replacements = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(300),
        json!(u64::MAX),
        json!(1.5),
        json!(""),
        json!("x"),
        json!("zz é \"q\\"),
        json!([]),
        json!([1]),
        json!(["x", {"zz": 1}]),
        json!({}),
        json!({"zz": 1}),
    ];
    let mut bad = Vec::new();
    for pointer in &at {
        for replacement in &replacements {
            let mut v = valid.clone();
            if let Some(node) = v.pointer_mut(pointer) {
                *node = replacement.clone();
                bad.push(v);
            }
        }
        let mut v = valid.clone();
        if let Some(Value::Object(map)) = v.pointer_mut(pointer) {
            let keys: Vec<String> = map.keys().cloned().collect();
            map.insert("zz\u{e9}\"unknown\\".into(), json!(1));
            bad.push(v);
            for key in keys {
                let mut v = valid.clone();
                if let Some(Value::Object(map)) = v.pointer_mut(pointer) {
                    map.remove(&key);
                    bad.push(v);
                }
            }
        }
    }
    bad.iter()
        .flat_map(|v| [v.to_string(), serde_json::to_string_pretty(v).unwrap_or_default()])
        .collect()
}

/// serde_path_to_error's message for `text` as a `T`, as `parse` gave it before it named
/// paths itself: the reference of [`paths_agree`].
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "testing")))]
pub fn reference_error<T: DeserializeOwned>(text: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(&mut de).err().map(|e| match e.path().to_string() {
        p if p == "." => format!("configuration: {}", e.inner()),
        p => format!("{p}: {}", e.inner()),
    })
}

/// Refuses each of [`bad_variants`] of `valid` as `reference` (serde_path_to_error, in the
/// test) does, message for message; the number refused.
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "testing")))]
#[allow(clippy::panic)]
pub fn paths_agree<T: DeserializeOwned>(valid: &serde_json::Value, reference: impl Fn(&str) -> Option<String>) -> usize {
    if let Err(e) = parse::<T>(valid.to_string().as_bytes()) {
        panic!("the valid configuration is refused: {e}");
    }
    let mut refused = 0;
    let mut differ = Vec::new();
    for text in bad_variants(valid) {
        let (ours, theirs) = (parse::<T>(text.as_bytes()).err().map(|e| e.0), reference(&text));
        refused += usize::from(theirs.is_some());
        if ours != theirs {
            differ.push(format!("{text}\n  parse:     {ours:?}\n  reference: {theirs:?}"));
        }
    }
    let shown: Vec<&String> = differ.iter().take(8).collect();
    assert!(differ.is_empty(), "{} of the bad variants differ, e.g.\n{shown:#?}", differ.len());
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        cluster: String,
    }
    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        routes: Vec<Inner>,
        max_body_bytes: u32,
    }
    impl Validate for Outer {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.max_body_bytes > 10 {
                return Err(ConfigError::field("max_body_bytes", "must be at most 10"));
            }
            Ok(())
        }
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_path() {
        let err = parse::<Outer>(br#"{"routes":[{"cluster":"a"},{"clster":"b"}]}"#).unwrap_err();
        assert!(err.0.starts_with("routes[1]"), "{err}");
        assert!(err.0.contains("clster"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse::<Outer>(br#"{"max_body_bytes":"big"}"#).unwrap_err();
        assert!(err.0.starts_with("max_body_bytes:"), "{err}");
    }

    #[test]
    fn empty_config_gets_defaults_and_validation_runs() {
        assert!(load::<Outer>(b"").is_ok());
        let err = load::<Outer>(br#"{"max_body_bytes":11}"#).unwrap_err();
        assert_eq!(err.0, "max_body_bytes: must be at most 10");
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(parse::<Outer>(b"{").is_err());
    }

    /// serde_path_to_error's naming, which `parse` had before (and still follows).
    fn reference<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                ConfigError(format!("configuration: {inner}"))
            } else {
                ConfigError(format!("{path}: {inner}"))
            }
        })?;
        de.end().map_err(|e| ConfigError(format!("configuration: {e}")))?;
        Ok(value)
    }

    /// Configuration shapes of every kind serde derives (only parsed, never read).
    #[allow(dead_code)]
    mod shapes {
        use serde::Deserialize;
        use std::collections::BTreeMap;

        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        pub struct Root {
            pub name: String,
            #[serde(default)]
            pub routes: Vec<Route>,
            #[serde(default)]
            pub grid: Vec<Vec<u8>>,
            #[serde(default)]
            pub limits: BTreeMap<String, Limit>,
            pub mode: Option<Mode>,
            #[serde(default)]
            pub action: Vec<Action>,
            #[serde(default)]
            pub either: Option<Either>,
            #[serde(default)]
            pub tagged: Option<Tagged>,
            #[serde(default)]
            pub flat: Option<Flat>,
            #[serde(default)]
            pub raw: Option<Box<serde_json::value::RawValue>>,
            #[serde(default)]
            pub pair: Option<(u16, String)>,
            #[serde(default, deserialize_with = "even")]
            pub even: u32,
            #[serde(default)]
            pub window: Option<Window>,
            #[serde(default)]
            pub ratio: f64,
        }
        #[derive(Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields, default)]
        pub struct Route {
            pub cluster: String,
            pub weight: u8,
            pub enabled: bool,
            pub headers: Vec<Header>,
        }
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        pub struct Header {
            pub name: String,
            pub value: Option<String>,
        }
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        pub struct Limit {
            pub tokens: u64,
            #[serde(default)]
            pub burst: i32,
        }
        #[derive(Deserialize, Debug)]
        #[serde(rename_all = "snake_case")]
        pub enum Mode {
            Strict,
            Lenient,
        }
        #[derive(Deserialize, Debug)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub enum Action {
            Allow,
            Deny { status: u16, #[serde(default)] body: String },
            Rewrite(String),
            Split(u8, u8),
        }
        #[derive(Deserialize, Debug)]
        #[serde(untagged)]
        pub enum Either {
            Number(u32),
            Words(Vec<String>),
        }
        #[derive(Deserialize, Debug)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum Tagged {
            File { path: String },
            Cluster { cluster: String, timeout_ms: u32 },
        }
        #[derive(Deserialize, Debug)]
        pub struct Flat {
            pub id: String,
            #[serde(flatten)]
            pub inner: Route,
        }
        #[derive(Debug)]
        pub struct Window(pub u32);
        impl<'de> Deserialize<'de> for Window {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.strip_suffix('s')
                    .and_then(|n| n.parse().ok())
                    .map(Window)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a window")))
            }
        }
        fn even<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
            let n = u32::deserialize(d)?;
            if n % 2 == 0 { Ok(n) } else { Err(serde::de::Error::custom("must be even")) }
        }
    }

    #[test]
    fn field_paths_are_serde_path_to_errors_on_many_bad_configs() {
        let valid = serde_json::json!({
            "name": "n",
            "routes": [
                {"cluster": "a", "weight": 1, "headers": [{"name": "h", "value": "v"}, {"name": "g", "value": null}]},
                {"cluster": "b", "enabled": true, "headers": []}
            ],
            "grid": [[1, 2], [], [3]],
            "limits": {"team": {"tokens": 10, "burst": -1}, "key.with.dots": {"tokens": 1}},
            "mode": "strict",
            "action": ["allow", {"deny": {"status": 403, "body": "no"}}, {"rewrite": "x"}, {"split": [1, 2]}],
            "either": ["w"],
            "tagged": {"type": "cluster", "cluster": "c", "timeout_ms": 5},
            "flat": {"id": "f", "cluster": "c", "weight": 2},
            "raw": {"any": [1, "thing"]},
            "pair": [1, "p"],
            "even": 4,
            "window": "60s",
            "ratio": 0.5
        });
        let refused = paths_agree::<shapes::Root>(&valid, |text| reference::<shapes::Root>(text).err().map(|e| e.0));
        assert!(refused > 500, "{refused}");
    }

    #[test]
    fn field_paths_agree_on_hand_written_configs() {
        let cases = [
            // Escapes in keys and strings before the error, several lines, a BOM-free UTF-8 key.
            "{\"name\": \"a\\\"b\\\\\",\n \"limits\": {\"t\\u00e9\\\"am\": {\"tokens\": \"ten\"}}}",
            "{\"name\": \"n\", \"lim\\u0069ts\": {\"é\": {\"tokenz\": 1}}}",
            "{\"name\": \"[{,\",\n\n   \"routes\": [{}, {\"headers\": [{\"name\": \"x\", \"valeu\": 1}]}]}",
            "{\"name\": \"n\", \"grid\": [[1], [2, [3]]]}",
            "{\"name\": \"n\", \"grid\": [[1], {\"a\": [1]}]}",
            "{\"name\": \"n\", \"routes\": [{\"headers\": [{\"value\": \"v\"}]}]}",
            "{\"name\": \"n\", \"action\": [{\"deny\": {}}]}",
            "{\"name\": \"n\", \"action\": [{\"deny\": {\"status\": 1, \"x\": 2}}]}",
            "{\"name\": \"n\", \"action\": [{\"split\": [1]}]}",
            "{\"name\": \"n\", \"action\": [{\"split\": [1, 2, 3]}]}",
            "{\"name\": \"n\", \"action\": [\"nope\"]}",
            "{\"name\": \"n\", \"window\": \"week\"}",
            "{\"name\": \"n\", \"even\": 3}",
            "{\"name\": \"n\", \"tagged\": {\"type\": \"cluster\", \"cluster\": 1}}",
            "{\"name\": \"n\", \"flat\": {\"id\": \"f\", \"weight\": 1000}}",
            "{\"routes\": []}",
            "[\"n\", [], [[1, \"x\"]]]",
            "  \"just a string\"  ",
            "{\"name\": \"n\"}",
        ];
        for text in cases {
            assert_eq!(parse::<shapes::Root>(text.as_bytes()).err(), reference::<shapes::Root>(text).err(), "{text}");
        }
        let e = parse::<shapes::Root>(cases[0].as_bytes()).unwrap_err();
        assert!(e.0.starts_with("limits.t\u{e9}\"am.tokens: invalid type: string \"ten\""), "{e}");
    }

    #[test]
    fn syntax_errors_name_where_they_are() {
        // As serde_path_to_error names them, less its `?` for a key it could not read.
        let cases = [
            ("{not json", "configuration: key must be a string at line 1 column 2"),
            ("{\"name\": \"n\"} trailing", "configuration: trailing characters at line 1 column 15"),
            ("{\"name\": \"n\", \"routes\": [{\"cluster\": \"a\" \"weight\": 1}]}", "routes[0]: expected `,` or `}` at line 1 column 42"),
            ("{\"name\": \"n\", \"grid\": [[1, 2,]]}", "grid[0]: trailing comma at line 1 column 30"),
            ("{\"name\": \"n\", \"routes\": [{\"cluster\": \"a", "routes[0].cluster: EOF while parsing a string at line 1 column 39"),
            ("{\"name\": \"n\", \"routes\": [{\"cluster\": tru}]}", "routes[0].cluster: expected ident at line 1 column 41"),
            ("{\"name\": \"n\", \"routes\": [{\"weight\": 1x}]}", "routes[0]: expected `,` or `}` at line 1 column 38"),
            ("{\"name\": \"n\", \"routes\": [{\"weight\": 1,,}]}", "routes[0]: key must be a string at line 1 column 39"),
            ("{\"name\": \"n\", \"routes\": [{\"weight\" 1}]}", "routes[0]: expected `:` at line 1 column 36"),
            ("{\"name\": \"n\", \"grid\": [[1,,2]]}", "grid[0][1]: expected value at line 1 column 27"),
            ("{\"name\": \"n\", \"grid\": [[1] [2]]}", "grid: expected `,` or `]` at line 1 column 28"),
            ("{\"name\": \"n\", \"routes\": [{\"cluster\": \"a\\q\"}]}", "routes[0].cluster: invalid escape at line 1 column 41"),
            ("{\"name\": \"n\",\n \"grid\": [[1],\n  [2 3]]}", "grid[1]: expected `,` or `]` at line 3 column 6"),
        ];
        for (text, expected) in cases {
            let theirs = reference::<shapes::Root>(text).unwrap_err().0.replace(".?:", ":").replace("?:", "configuration:");
            assert_eq!(theirs, expected, "{text}");
            assert_eq!(parse::<shapes::Root>(text.as_bytes()).unwrap_err().0, expected, "{text}");
        }
    }
}

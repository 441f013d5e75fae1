//! Tool and prompt arguments as the policy and the audit read them: a JSON tree borrowing
//! from the request body (keys, strings without escapes and numbers are not copied), each
//! object's members sorted by key, numbers kept as written (compared exactly, never through a
//! double alone), strings that hold JSON read also as that JSON ([`Json::Encoded`]). Read
//! once per call: argument rules walk it, and its canonical form is the audit digest. Unlike
//! `serde_json::Value`, it costs one allocation per object or array, not one per key,
//! string and map node.

use crate::number::Reading;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// As written (`1e3`, `1.0`, `-0`): compared by exact decimal value (see [`Num`]).
    Number(Num<'a>),
    String(Cow<'a, str>),
    /// A string whose text (after trimming whitespace) is itself JSON: an array, an object
    /// or `null`. Servers read such strings as that value for parameters not typed as
    /// strings (the MCP Python SDK does, and pydantic's `Json` types), so argument rules read
    /// both: the string as written and the value it holds (`None`: it looks like JSON, `[` or
    /// `{` first, but is not JSON this filter reads, or is nested too deep).
    Encoded(Cow<'a, str>, Option<Box<Json<'a>>>),
    Array(Vec<Json<'a>>),
    /// Sorted by key (UTF-8 bytes, as `serde_json::Map` orders them), each key once (the
    /// last of repeated keys, as `serde_json::Value` keeps it).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// A JSON number as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Num<'a>(Cow<'a, str>);

impl Num<'_> {
    pub fn text(&self) -> &str {
        &self.0
    }

    /// Its exact value and nearest double; `None` for exponents too large to read.
    pub fn reading(&self) -> Option<Reading> {
        Reading::parse(&self.0)
    }
}

/// How deep arrays and objects nest (serde_json's own limit), strings holding JSON included.
const MAX_DEPTH: usize = 128;
/// How many times a string holding JSON is read inside another one.
const MAX_ENCODINGS: usize = 4;

/// Reads tool or prompt arguments (any JSON value; the caller checks it is an object),
/// numbers kept as written and strings holding JSON arrays, objects or `null` read as
/// [`Json::Encoded`]. Strict JSON: whatever serde_json refuses is refused.
pub fn parse(text: &str) -> Result<Json<'_>, String> {
    Parser::new(text, true, 0, 0).document()
}

/// Reads a JSON value of the configuration (an expected value): strings stay strings.
pub fn parse_literal(text: &str) -> Result<Json<'_>, String> {
    Parser::new(text, false, 0, 0).document()
}

impl<'a> Json<'a> {
    /// The member named `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => {
                members.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().and_then(|i| members.get(i)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The string as written (also of a string holding JSON).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) | Json::Encoded(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Json::Array(_))
    }

    /// Whether a string anywhere in it holds JSON ([`Json::Encoded`]).
    pub fn has_encoded(&self) -> bool {
        match self {
            Json::Encoded(..) => true,
            Json::Array(items) => items.iter().any(Json::has_encoded),
            Json::Object(members) => members.iter().any(|(_, v)| v.has_encoded()),
            _ => false,
        }
    }

    /// The same tree owning its text.
    pub fn into_owned(self) -> Json<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(Num(t)) => Json::Number(Num(own(t))),
            Json::String(s) => Json::String(own(s)),
            Json::Encoded(s, v) => Json::Encoded(own(s), v.map(|v| Box::new(v.into_owned()))),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(members) => Json::Object(members.into_iter().map(|(k, v)| (own(k), v.into_owned())).collect()),
        }
    }

    /// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings as
    /// serde_json writes them, numbers as written. Its SHA-256 is the audit digest of
    /// arguments.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Json::Number(n) => out.extend_from_slice(n.text().as_bytes()),
            // Writing into a Vec cannot fail.
            Json::String(s) | Json::Encoded(s, _) => {
                let _ = serde_json::to_writer(&mut *out, s);
            }
            Json::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_canonical(out);
                }
                out.push(b']');
            }
            Json::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.push(b':');
                    v.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The same tree from a `serde_json::Value` (owned), read as [`parse`] reads arguments
    /// (numbers as serde_json writes them).
    pub fn from_value(value: &serde_json::Value) -> Json<'static> {
        let text = value.to_string();
        parse(&text).map(Json::into_owned).unwrap_or(Json::Null)
    }
}

/// Members sorted by key; of repeated keys the last one stays.
fn sorted<'a>(mut members: Vec<(Cow<'a, str>, Json<'a>)>) -> Vec<(Cow<'a, str>, Json<'a>)> {
    // Stable: repeated keys stay in document order, next to each other.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members.dedup_by(|later, earlier| {
        let repeated = later.0 == earlier.0;
        if repeated {
            std::mem::swap(later, earlier);
        }
        repeated
    });
    members
}

/// A strict JSON reader building [`Json`], borrowing keys, strings and numbers from the text.
struct Parser<'a> {
    s: &'a str,
    at: usize,
    /// Read strings holding JSON as [`Json::Encoded`].
    decode: bool,
    /// How many strings holding JSON enclose this text.
    encodings: usize,
    /// Nesting depth at which this text starts.
    base_depth: usize,
}

type Parsed<'a> = Result<Json<'a>, String>;

impl<'a> Parser<'a> {
    fn new(s: &'a str, decode: bool, encodings: usize, base_depth: usize) -> Self {
        Parser { s, at: 0, decode, encodings, base_depth }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.at))
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn document(mut self) -> Parsed<'a> {
        let v = self.value(self.base_depth)?;
        self.blanks();
        if self.at != self.s.len() {
            return self.err("trailing characters");
        }
        Ok(v)
    }

    fn value(&mut self, depth: usize) -> Parsed<'a> {
        self.blanks();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                let s = self.string()?;
                Ok(self.string_value(s, depth))
            }
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expected a JSON value"),
        }
    }

    fn literal(&mut self, word: &str, value: Json<'a>) -> Parsed<'a> {
        if self.s.get(self.at..).is_some_and(|rest| rest.starts_with(word)) {
            self.at += word.len();
            Ok(value)
        } else {
            self.err("expected a JSON value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Parsed<'a> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        match self.s.get(start..self.at) {
            Some(text) => Ok(Json::Number(Num(Cow::Borrowed(text)))),
            None => self.err("invalid number"),
        }
    }

    /// A string token, unescaped by serde_json when it has escapes (borrowed otherwise).
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        let start = self.at;
        self.at += 1; // `"`
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 2;
                }
                Some(c) if c < 0x20 => return self.err("control character in string"),
                Some(_) => self.at += 1,
            }
        }
        self.at += 1; // `"`
        let Some(token) = self.s.get(start..self.at) else { return self.err("invalid string") };
        if !escaped {
            return match token.get(1..token.len() - 1) {
                Some(inner) => Ok(Cow::Borrowed(inner)),
                None => self.err("invalid string"),
            };
        }
        serde_json::from_str::<String>(token).map(Cow::Owned).or_else(|e| self.err(&format!("invalid string ({e})")))
    }

    /// A string value: plain, or holding JSON ([`Json::Encoded`]).
    fn string_value(&self, s: Cow<'a, str>, depth: usize) -> Json<'a> {
        if !self.decode {
            return Json::String(s);
        }
        let t = s.trim();
        if !(t.starts_with('[') || t.starts_with('{') || t == "null") {
            return Json::String(s);
        }
        let inner = if self.encodings >= MAX_ENCODINGS {
            None
        } else {
            Parser::new(t, true, self.encodings + 1, depth).document().ok().map(|v| Box::new(v.into_owned()))
        };
        Json::Encoded(s, inner)
    }

    fn array(&mut self, depth: usize) -> Parsed<'a> {
        if depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        self.at += 1; // `[`
        let mut items = Vec::new();
        self.blanks();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.blanks();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.err("expected `,` or `]`"),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Parsed<'a> {
        if depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        self.at += 1; // `{`
        let mut members = Vec::new();
        self.blanks();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.blanks();
            if self.peek() != Some(b'"') {
                return self.err("expected a key");
            }
            let key = self.string()?;
            self.blanks();
            if self.peek() != Some(b':') {
                return self.err("expected `:`");
            }
            self.at += 1;
            members.push((key, self.value(depth)?));
            self.blanks();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(sorted(members)));
                }
                _ => return self.err("expected `,` or `}`"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The canonical form as written from a `serde_json::Value` before this module.
    fn canonical_of_value(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    canonical_of_value(&map[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical_of_value(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }

    fn canonical(j: &Json<'_>) -> String {
        let mut out = Vec::new();
        j.write_canonical(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_form() {
        let j = parse(r#"{"b": [1, {"z": 1, "a": "é"}], "a": null, "c": 1.5, "\u0007q\"": "\n"}"#).unwrap();
        assert_eq!(canonical(&j), r#"{"\u0007q\"":"\n","a":null,"b":[1,{"a":"é","z":1}],"c":1.5}"#);
    }

    #[test]
    fn reads_as_serde_json_value_reads() {
        // Numbers written as serde_json writes them; others are kept as written (below).
        for text in [
            r#"{"table":"orders","sql":"select 1","options":{"database":"sales","timeout_ms":2000}}"#,
            r#"{"a":1,"a":2,"b":[1.0,100000.0,-0.0,1e-7,18446744073709551615,-9223372036854775808,1.2345678901234568e+22]}"#,
            r#"{"é":"\ud83d\ude00","e\u0301":"x","z\u0000":"\u0000","":{"":[]}}"#,
            r#"[true,false,null,"a\"b",{"k":{"k":{"k":[{}]}}}]"#,
            r#""plain""#,
            r#"3.25"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let j = parse(text).unwrap();
            let mut expected = String::new();
            canonical_of_value(&value, &mut expected);
            assert_eq!(canonical(&j), expected, "{text}");
            assert_eq!(Json::from_value(&value), j, "{text}");
        }
    }

    #[test]
    fn numbers_are_kept_as_written() {
        let text = r#"{"n":[1.0,1e5,-0,1E-7,1000.0000000000001,9007199254740993,12345678901234567890123]}"#;
        let j = parse(text).unwrap();
        assert_eq!(canonical(&j), text);
        let Some(Json::Array(items)) = j.get("n") else { panic!("{j:?}") };
        let Json::Number(n) = &items[4] else { panic!() };
        assert_eq!(n.text(), "1000.0000000000001");
        assert!(n.reading().unwrap().exact > crate::number::Decimal::parse("1000").unwrap());
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in ["", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "+1", "1e", "NaN", "[1] x", "\"\u{1}\"", "\"\\x\"", "{a:1}", "'a'", "tru", "\"\\ud800\""] {
            assert!(parse(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(129) + &"]".repeat(129);
        assert!(parse(&deep).is_err());
        assert!(parse(&("[".repeat(128) + &"]".repeat(128))).is_ok());
    }

    #[test]
    fn every_key_is_an_ordinary_key() {
        // serde_json::Value (raw_value feature) reads this object as the JSON in its string.
        let text = r#"{"$serde_json::private::RawValue":"{\"table\":\"orders\"}"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(value, json!({"table": "orders"}));
        let j = parse(text).unwrap();
        assert_eq!(j.get("table"), None);
        assert_eq!(canonical(&j), text);
    }

    #[test]
    fn keys_and_strings_borrow_unless_escaped() {
        let j = parse(r#"{"plain":"text","esc\u0061ped":"a\nb"}"#).unwrap();
        let Json::Object(members) = &j else { panic!("{j:?}") };
        assert!(matches!(&members[0], (Cow::Owned(k), Json::String(Cow::Owned(_))) if k == "escaped"));
        assert!(matches!(&members[1], (Cow::Borrowed("plain"), Json::String(Cow::Borrowed("text")))));
        assert_eq!(j.get("escaped").and_then(Json::as_str), Some("a\nb"));
        assert_eq!(j.get("missing"), None);
        assert_eq!(Json::from_value(&json!({"b": 1, "a": 2})).get("a"), Some(&parse("2").unwrap()));
    }

    #[test]
    fn strings_holding_json_are_read_as_it_too() {
        let j = parse(r#"{"tables":" [\"users\"] ","o":"{\"a\":\"[1]\"}","n":"null","s":"[draft","x":"users","num":"5"}"#).unwrap();
        assert!(j.has_encoded());
        let Some(Json::Encoded(s, Some(v))) = j.get("tables") else { panic!("{j:?}") };
        assert_eq!(s, " [\"users\"] ");
        assert_eq!(**v, parse(r#"["users"]"#).unwrap());
        // Nested: the inner string is read too.
        let Some(Json::Encoded(_, Some(o))) = j.get("o") else { panic!() };
        assert!(matches!(o.get("a"), Some(Json::Encoded(_, Some(_)))));
        assert!(matches!(j.get("n"), Some(Json::Encoded(_, Some(v))) if **v == Json::Null));
        // Looks like JSON but is not: no reading.
        assert!(matches!(j.get("s"), Some(Json::Encoded(_, None))));
        assert!(matches!(j.get("x"), Some(Json::String(_))));
        assert!(matches!(j.get("num"), Some(Json::String(_))));
        // Written back as the string it is.
        assert!(canonical(&j).contains(r#""tables":" [\"users\"] ""#));
        // Deeper than four encodings: no reading.
        let mut text = "[1]".to_string();
        for _ in 0..5 {
            text = format!("[{}]", serde_json::to_string(&text).unwrap());
        }
        let mut v = parse(&text).unwrap();
        for _ in 0..4 {
            let Json::Array(mut items) = v else { panic!("{v:?}") };
            let Some(Json::Encoded(_, Some(inner))) = items.pop() else { panic!() };
            v = *inner;
        }
        assert!(matches!(&v, Json::Array(items) if matches!(items[0], Json::Encoded(_, None))), "{v:?}");
        // Configuration values stay strings.
        assert!(matches!(parse_literal(r#""[1]""#), Ok(Json::String(_))));
        assert!(!parse(r#"{"a":["x"]}"#).unwrap().has_encoded());
    }
}

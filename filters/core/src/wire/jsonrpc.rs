//! JSON-RPC 2.0 envelopes, parsed borrowed: `params`, `result` and `error` stay raw until a
//! filter needs them (or `params` is read in the same pass as a filter's own type).

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use crate::wire::json_scan::text_run;
#[cfg(doc)]
use crate::wire::json_scan::StringBody;

/// One message. `P` is how `params` is read: raw by default.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub struct Envelope<'a, P = &'a RawValue> {
    #[serde(default, borrow)]
    pub jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    /// `Some` whenever the member is present, even as `null` (JSON-RPC: a message with an
    /// `id` member is a request, not a notification).
    #[serde(default, borrow, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub params: Option<P>,
    #[serde(default, borrow)]
    pub result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub error: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcParseError {
    /// Not JSON at all (JSON-RPC -32700).
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message (JSON-RPC -32600).
    Invalid(String),
}

impl RpcParseError {
    pub fn code(&self) -> i64 {
        match self {
            RpcParseError::Parse(_) => crate::reply::codes::PARSE_ERROR,
            RpcParseError::Invalid(_) => crate::reply::codes::INVALID_REQUEST,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            RpcParseError::Parse(m) | RpcParseError::Invalid(m) => m,
        }
    }
}

impl<P> Envelope<'_, P> {
    /// Classifies and checks the envelope: `jsonrpc` must be "2.0"; a request has a method and
    /// an id (string or number), a response a result xor an error.
    pub fn kind(&self) -> Result<Kind, RpcParseError> {
        if self.jsonrpc.as_deref() != Some("2.0") {
            return Err(RpcParseError::Invalid("jsonrpc must be \"2.0\"".into()));
        }
        let id_is_null = self.id.map(|id| id.get() == "null");
        if let Some(id) = self.id {
            let first = id.get().as_bytes().first().copied().unwrap_or(b'n');
            let valid = first == b'"' || first == b'-' || first.is_ascii_digit() || id.get() == "null";
            if !valid {
                return Err(RpcParseError::Invalid("id must be a string or a number".into()));
            }
        }
        match (&self.method, id_is_null, self.result.is_some(), self.error.is_some()) {
            // A request with `"id": null` cannot be answered unambiguously: refused, never
            // mistaken for a notification (which a policy might not judge).
            (Some(_), Some(true), _, _) => Err(RpcParseError::Invalid("a request id must not be null".into())),
            (Some(_), Some(false), false, false) => Ok(Kind::Request),
            (Some(_), None, false, false) => Ok(Kind::Notification),
            (None, Some(false), true, false) | (None, Some(_), false, true) => Ok(Kind::Response),
            _ => Err(RpcParseError::Invalid("not a JSON-RPC request, notification or response".into())),
        }
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }
}

/// A POSTed body: one message or (MCP 2025-03-26) a batch.
#[derive(Debug)]
pub enum Body<'a, P = &'a RawValue> {
    Single(Envelope<'a, P>),
    Batch(Vec<Envelope<'a, P>>),
}

impl<'a, P> Body<'a, P> {
    pub fn messages(&self) -> &[Envelope<'a, P>] {
        match self {
            Body::Single(e) => std::slice::from_ref(e),
            Body::Batch(v) => v,
        }
    }

    /// The messages, owned (a filter taking its params out of them), without a list for
    /// a single one.
    pub fn into_messages(self) -> impl Iterator<Item = Envelope<'a, P>> {
        let (single, batch) = match self {
            Body::Single(e) => (Some(e), Vec::new()),
            Body::Batch(v) => (None, v),
        };
        single.into_iter().chain(batch)
    }
}

/// Parses a JSON-RPC body. An empty batch is invalid, as JSON-RPC says.
pub fn parse_body(bytes: &[u8]) -> Result<Body<'_>, RpcParseError> {
    // UTF-8 checked once up front lets serde skip it string by string; the errors of
    // either source are the same.
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_source(Source::Text(text)),
        Err(_) => parse_source(Source::Bytes(bytes)),
    }
}

/// Why [`parse_body_unique`] refused a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// What [`parse_body`] refuses.
    Rpc(RpcParseError),
    /// A JSON-RPC body that [`check_no_duplicate_keys`] refuses: a key repeated anywhere
    /// (or a string, number or nesting a full parse refuses).
    Ambiguous(String),
}

/// [`parse_body`], then [`check_no_duplicate_keys`], with the same outcome and errors, but
/// the second check is a byte scan of the text serde just accepted (no second parse).
pub fn parse_body_unique(bytes: &[u8]) -> Result<Body<'_>, BodyError> {
    parse_body_unique_as(bytes)
}

/// [`parse_body_unique`] reading each `params` as `P` in the same pass. Where `P` refuses
/// what raw params would take, the error is that of a body serde cannot read: callers
/// wanting per-message errors read such bodies again with raw params.
pub fn parse_body_unique_as<'a, P: Deserialize<'a>>(bytes: &'a [u8]) -> Result<Body<'a, P>, BodyError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        // Rare: the two checks as they are, in their order, give their usual errors.
        parse_body(bytes).map_err(BodyError::Rpc)?;
        check_no_duplicate_keys(bytes).map_err(BodyError::Ambiguous)?;
        return Err(BodyError::Ambiguous("invalid unicode code point".into()));
    };
    let body = parse_source(Source::Text(text)).map_err(BodyError::Rpc)?;
    scan_unique(text).map_err(BodyError::Ambiguous)?;
    Ok(body)
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Source<'a> {
    fn read<T: Deserialize<'a>>(self) -> Result<T, serde_json::Error> {
        match self {
            Source::Text(t) => serde_json::from_str(t),
            Source::Bytes(b) => serde_json::from_slice(b),
        }
    }

    fn bytes(self) -> &'a [u8] {
        match self {
            Source::Text(t) => t.as_bytes(),
            Source::Bytes(b) => b,
        }
    }
}

fn parse_source<'a, P: Deserialize<'a>>(source: Source<'a>) -> Result<Body<'a, P>, RpcParseError> {
    let first = source.bytes().iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let Batch(batch) = source.read().map_err(classify)?;
            if batch.is_empty() {
                return Err(RpcParseError::Invalid("empty batch".into()));
            }
            Ok(Body::Batch(batch))
        }
        Some(b'{') => Ok(Body::Single(source.read().map_err(classify)?)),
        Some(_) => {
            // Valid JSON that is neither object nor array is an invalid request, not a parse error.
            source.read::<IgnoredAny>().map_err(classify)?;
            Err(RpcParseError::Invalid("a JSON-RPC message must be an object".into()))
        }
        None => Err(RpcParseError::Parse("empty body".into())),
    }
}

/// A batch whose elements are read only from JSON objects. serde's derived reading of a
/// struct also takes a sequence, positionally: `[["2.0","tools/call",7,{"name":"add"}]]`
/// would be judged as a `tools/call` that no other JSON-RPC reader sees (found by fuzzing).
struct Batch<'a, P>(Vec<Envelope<'a, P>>);

impl<'de: 'a, 'a, P: Deserialize<'de>> Deserialize<'de> for Batch<'a, P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Elements<'a, P>(std::marker::PhantomData<Envelope<'a, P>>);
        impl<'de: 'a, 'a, P: Deserialize<'de>> Visitor<'de> for Elements<'a, P> {
            type Value = Vec<Envelope<'a, P>>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a batch of JSON-RPC message objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(message) = seq.next_element_seed(ObjectOnly(std::marker::PhantomData))? {
                    out.push(message);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Elements(std::marker::PhantomData)).map(Batch)
    }
}

/// Reads one [`Envelope`] from a JSON object and nothing else.
struct ObjectOnly<'a, P>(std::marker::PhantomData<Envelope<'a, P>>);

impl<'de: 'a, 'a, P: Deserialize<'de>> de::DeserializeSeed<'de> for ObjectOnly<'a, P> {
    type Value = Envelope<'a, P>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a, P: Deserialize<'de>> Visitor<'de> for ObjectOnly<'a, P> {
    type Value = Envelope<'a, P>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-RPC message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Envelope::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

fn classify(e: serde_json::Error) -> RpcParseError {
    if e.is_data() {
        RpcParseError::Invalid(e.to_string())
    } else {
        RpcParseError::Parse(e.to_string())
    }
}

/// Checks that no object anywhere in the document repeats a key. Different parsers keep
/// different duplicates (first or last), so a policy engine and an upstream could see
/// different values: such documents are refused.
pub fn check_no_duplicate_keys(bytes: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    NoDuplicates::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        // Keys borrow from the body unless escaped. Small objects (nearly all) are checked
        // against a short list; past SMALL keys a set keeps a huge object linear.
        const SMALL: usize = 16;
        let mut few: Vec<Key<'de>> = Vec::new();
        let mut many: HashSet<Key<'de>> = HashSet::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let repeated = if many.is_empty() && few.len() < SMALL {
                few.contains(&key)
            } else {
                if many.is_empty() {
                    many.extend(few.drain(..));
                }
                many.contains(&key)
            };
            if repeated {
                return Err(de::Error::custom(format!("duplicate key `{}`", key.0)));
            }
            if many.is_empty() && few.len() < SMALL {
                few.push(key);
            } else {
                many.insert(key);
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// An object key as written in the body (borrowed), or unescaped (owned).
#[derive(PartialEq, Eq, Hash)]
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// serde_json's nesting limit: a full parse refuses a document nested this deep.
const MAX_NESTING: usize = 128;
/// Objects up to this many keys are checked against a list, larger ones against a set.
const SMALL_OBJECT: usize = 16;

/// [`scan_unique`]'s stack: the open arrays and objects, each object followed by its keys
/// (one list for both: one allocation per document).
enum Item<'a> {
    /// `set`: the object's keys are in `sets[set]` (past [`SMALL_OBJECT`] keys).
    Open { object: bool, set: Option<usize> },
    Key(Cow<'a, str>),
}

/// What [`check_no_duplicate_keys`] refuses in a document serde_json already parsed (so
/// well-formed UTF-8 JSON), in one pass over its bytes: a key repeated in an object (keys
/// compared unescaped), a string with an unpaired surrogate escape, a number out of f64
/// range, nesting of [`MAX_NESTING`]. The parse that accepted the document skipped these
/// where it kept values raw or ignored them.
fn scan_unique(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut stack: Vec<Item<'_>> = Vec::with_capacity(32);
    let mut sets: Vec<HashSet<Cow<'_, str>>> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'{' | b'[' => {
                depth += 1;
                if depth >= MAX_NESTING {
                    return Err(at(text, i + 1, "recursion limit exceeded"));
                }
                stack.push(Item::Open { object: c == b'{', set: None });
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                while let Some(item) = stack.pop() {
                    if let Item::Open { set, .. } = item {
                        if set.is_some() {
                            sets.pop();
                        }
                        break;
                    }
                }
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let (end, escaped) = string_end(text, start).ok_or_else(|| at(text, b.len(), "EOF while parsing a string"))?;
                i = end + 1;
                // Escapes are decoded by serde_json itself (refusing unpaired surrogates).
                let key: Cow<'_, str> = if escaped {
                    let quoted = text.get(start - 1..i).unwrap_or_default();
                    Cow::Owned(serde_json::from_str::<String>(quoted).map_err(|e| relocate(text, start - 1, &e))?)
                } else {
                    Cow::Borrowed(text.get(start..end).unwrap_or_default())
                };
                // A string followed by `:` is a key.
                let gap = b.get(i..).unwrap_or_default().iter().take_while(|c| c.is_ascii_whitespace()).count();
                if b.get(i + gap) != Some(&b':') {
                    continue;
                }
                let Some(open) = stack.iter().rposition(|item| matches!(item, Item::Open { .. })) else {
                    return Err(at(text, i, "key outside an object"));
                };
                let (own, set) = match stack.get(open..) {
                    Some([Item::Open { object: true, set }, own @ ..]) => (own, *set),
                    _ => return Err(at(text, i, "key outside an object")),
                };
                let repeated = match set.and_then(|s| sets.get_mut(s)) {
                    Some(set) => !set.insert(key.clone()),
                    None => own.iter().any(|item| matches!(item, Item::Key(k) if *k == key)),
                };
                if repeated {
                    // Where serde_json stands when it sees the key: at its colon.
                    return Err(at(text, i + gap, &format!("duplicate key `{key}`")));
                }
                if set.is_none() {
                    stack.push(Item::Key(key));
                    if stack.len() - open > SMALL_OBJECT {
                        // Many keys: a set keeps a huge object linear.
                        let keys = stack.drain(open + 1..).filter_map(|item| match item {
                            Item::Key(k) => Some(k),
                            Item::Open { .. } => None,
                        });
                        sets.push(keys.collect());
                        if let Some(Item::Open { set, .. }) = stack.get_mut(open) {
                            *set = Some(sets.len() - 1);
                        }
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while matches!(b.get(i), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                    i += 1;
                }
                let number = text.get(start..i).unwrap_or_default();
                // Without an exponent, 300 characters stay far below f64::MAX; the rest is
                // read by serde_json as a full parse reads it.
                if number.len() > 300 || number.bytes().any(|c| c == b'e' || c == b'E') {
                    serde_json::from_str::<f64>(number).map_err(|e| relocate(text, start, &e))?;
                }
            }
            // Whitespace, `,`, `:` and the letters of true, false, null.
            _ => i += 1,
        }
    }
    Ok(())
}

/// Where the string whose text starts at `start` ends (its closing quote), and whether it
/// holds escapes (a backslash and the byte after it). Runs of text are skipped as
/// [`StringBody`] skips them (the whole text is here, so no state between chunks).
fn string_end(text: &str, start: usize) -> Option<(usize, bool)> {
    let b = text.as_bytes();
    let mut j = start;
    let mut escaped = false;
    loop {
        j += text_run(b.get(j..)?);
        match *b.get(j)? {
            b'"' => return Some((j, escaped)),
            _ => {
                escaped = true;
                j += 2;
            }
        }
    }
}

/// `what at line L column C`, the position counted as serde_json counts it (bytes read).
fn at(text: &str, index: usize, what: &str) -> String {
    let before = text.as_bytes().get(..index).unwrap_or(text.as_bytes());
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let column = before.len() - before.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    format!("{what} at line {line} column {column}")
}

/// A serde_json error about a piece of `text` starting at `offset`, placed in `text`.
fn relocate(text: &str, offset: usize, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let what = message.split(" at line ").next().unwrap_or(&message);
    // The piece is one line: its column is an offset within it.
    at(text, offset + e.column(), what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_elements_must_be_objects() {
        // A struct reading that also took sequences would see `tools/call add` here.
        for body in [&br#"[["2.0","tools/call",7,{"name":"add"}]]"#[..], br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},["2.0","x",2]]"#] {
            assert!(matches!(parse_body(body), Err(RpcParseError::Invalid(_))), "{}", String::from_utf8_lossy(body));
            assert!(parse_body_unique(body).is_err());
        }
        let ok = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"}]"#;
        assert_eq!(parse_body(ok).map(|b| b.messages().len()), Ok(2));
    }

    #[test]
    fn classifies_messages() {
        let body = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#).unwrap();
        let m = &body.messages()[0];
        assert_eq!(m.kind(), Ok(Kind::Request));
        assert_eq!(m.method(), "tools/call");
        assert_eq!(m.params.unwrap().get(), r#"{"name":"x"}"#);
        let n = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.messages()[0].kind(), Ok(Kind::Notification));
        let r = parse_body(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(r.messages()[0].kind(), Ok(Kind::Response));
    }

    #[test]
    fn batches() {
        let b = parse_body(br#" [{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]"#).unwrap();
        assert_eq!(b.messages().len(), 2);
        assert!(matches!(parse_body(b"[]"), Err(RpcParseError::Invalid(_))));
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(parse_body(b"{not json"), Err(RpcParseError::Parse(_))));
        assert!(matches!(parse_body(b""), Err(RpcParseError::Parse(_))));
        assert!(matches!(parse_body(b"42"), Err(RpcParseError::Invalid(_))));
        assert!(matches!(parse_body(br#"{"method": 5}"#), Err(RpcParseError::Invalid(_))));
        let wrong_version = parse_body(br#"{"jsonrpc":"1.0","id":1,"method":"a"}"#).unwrap();
        assert!(wrong_version.messages()[0].kind().is_err());
        let bad_id = parse_body(br#"{"jsonrpc":"2.0","id":{},"method":"a"}"#).unwrap();
        assert!(bad_id.messages()[0].kind().is_err());
    }

    #[test]
    fn null_ids() {
        let null_request = parse_body(br#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#).unwrap();
        assert!(null_request.messages()[0].id.is_some());
        assert!(null_request.messages()[0].kind().is_err());
        let error_response = parse_body(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#).unwrap();
        assert_eq!(error_response.messages()[0].kind(), Ok(Kind::Response));
        let null_result = parse_body(br#"{"jsonrpc":"2.0","id":null,"result":{}}"#).unwrap();
        assert!(null_result.messages()[0].kind().is_err());
    }

    #[test]
    fn many_keys_are_checked_in_linear_time() {
        let mut body = String::from("{");
        for i in 0..100_000 {
            body.push_str(&format!("\"k{i}\":{i},"));
        }
        body.push_str("\"k0\":1}");
        let err = check_no_duplicate_keys(body.as_bytes()).unwrap_err();
        assert!(err.contains("k0"), "{err}");
    }

    #[test]
    fn duplicate_keys_anywhere_are_refused() {
        assert!(check_no_duplicate_keys(br#"{"a":1,"b":{"c":[{"d":1,"e":2}]}}"#).is_ok());
        assert!(check_no_duplicate_keys(br#"{"a":1,"a":2}"#).is_err());
        let err = check_no_duplicate_keys(br#"{"params":{"arguments":{"table":"x","table":"y"}}}"#).unwrap_err();
        assert!(err.contains("table"), "{err}");
        assert!(check_no_duplicate_keys(br#"[{"a":1},{"a":1}]"#).is_ok());
        assert!(check_no_duplicate_keys(br#"{"a\u0062":1,"ab":2}"#).is_err());
    }

    #[test]
    fn duplicates_are_found_before_and_after_the_small_list_gives_way() {
        for keys in [3usize, 15, 16, 17, 40] {
            let distinct: Vec<String> = (0..keys).map(|i| format!("\"k{i}\":{i}")).collect();
            let body = format!("{{{}}}", distinct.join(","));
            assert!(check_no_duplicate_keys(body.as_bytes()).is_ok(), "{keys}");
            for repeat in [0, keys / 2, keys - 1] {
                let body = format!("{{{},\"k{repeat}\":0}}", distinct.join(","));
                assert!(check_no_duplicate_keys(body.as_bytes()).is_err(), "{keys} keys, k{repeat} repeated");
                // The same in params, nested in and followed by other objects, in one pass.
                let body = format!(r#"{{"jsonrpc":"2.0","method":"m","params":{{"x":{{{}}},"y":{{{},"k{repeat}":[{{"k{repeat}":1}}]}},"z":{{"k0":1}}}}}}"#, distinct.join(","), distinct.join(","));
                assert!(matches!(one_pass(body.as_bytes()), Err(BodyError::Ambiguous(_))), "{keys} keys, k{repeat} repeated");
                assert_eq!(one_pass(body.as_bytes()), two_passes(body.as_bytes()));
            }
            let body = format!(r#"{{"jsonrpc":"2.0","method":"m","params":{{"x":{{{}}},"y":{{{},"k":[{{"k0":1}}]}},"k0":{{"k0":1}}}}}}"#, distinct.join(","), distinct.join(","));
            assert_eq!(one_pass(body.as_bytes()), Ok(1), "{keys}");
        }
    }

    /// Both checks as they were, one after the other: what `parse_body_unique` must match.
    fn two_passes(bytes: &[u8]) -> Result<usize, BodyError> {
        let body = parse_body(bytes).map_err(BodyError::Rpc)?;
        check_no_duplicate_keys(bytes).map_err(BodyError::Ambiguous)?;
        Ok(body.messages().len())
    }

    fn one_pass(bytes: &[u8]) -> Result<usize, BodyError> {
        parse_body_unique(bytes).map(|b| b.messages().len())
    }

    #[test]
    fn one_pass_refuses_what_the_duplicate_check_refuses() {
        let deep = |n: usize| format!(r#"{{"jsonrpc":"2.0","method":"m","params":{{"x":{}{}}}}}"#, "[".repeat(n), "]".repeat(n));
        let many = |repeat: bool| {
            let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{{\"a\":1,\"b\":[{{\"a\":2}}]}}")).collect();
            let extra = if repeat { ",\"k7\":0" } else { "" };
            format!(r#"{{"jsonrpc":"2.0","method":"m","params":{{{}{extra}}}}}"#, keys.join(","))
        };
        let cases: Vec<Vec<u8>> = vec![
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"table":"x","table":"y"}}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","name":"y"}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"a","x":1,"x":2}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"a","id":2}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"a\u0062":1,"ab":2}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"a":{"b":1},"c":{"b":1}}}"#.to_vec(),
            br#"[{"jsonrpc":"2.0","id":1,"method":"a","params":{"a":1}},{"jsonrpc":"2.0","id":2,"method":"a","params":{"a":1,"a":1}}]"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"s":"\ud800"}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"s":"\udc00x"}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"s":"\ud83d\ude00 \" \\ \n"}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"\ud800":1}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"n":1e400}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"n":1.7976931348623158e308}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","method":"a","params":{"n":-1E-400}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1e999,"method":"a"}"#.to_vec(),
            format!(r#"{{"jsonrpc":"2.0","method":"a","params":{{"n":{}}}}}"#, "9".repeat(400)).into_bytes(),
            format!(r#"{{"jsonrpc":"2.0","method":"a","params":{{"n":{}.5}}}}"#, "9".repeat(300)).into_bytes(),
            b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"x\":\"\xff\"}".to_vec(),
            b"{\"jsonrpc\":\"2.0\",\"method\":\"a\xff\"}".to_vec(),
            b"{\"jsonrpc\":\"2.0\",\n \"method\":\"a\",\n \"x\":1,\n \"x\":2}".to_vec(),
            deep(125).into_bytes(),
            deep(126).into_bytes(),
            many(false).into_bytes(),
            many(true).into_bytes(),
            b"{not json".to_vec(),
            b"42".to_vec(),
            b"[]".to_vec(),
            b"   ".to_vec(),
        ];
        for case in &cases {
            assert_eq!(one_pass(case), two_passes(case), "{}", String::from_utf8_lossy(case));
        }
        assert!(matches!(one_pass(&cases[0]), Err(BodyError::Ambiguous(e)) if e.contains("`table`")));
        assert!(one_pass(&cases[5]).is_ok() && one_pass(&deep(125).into_bytes()).is_ok() && one_pass(&many(false).into_bytes()).is_ok());
    }

    #[test]
    fn string_ends_are_found_a_word_at_a_time_as_byte_by_byte() {
        fn naive(b: &[u8], start: usize) -> Option<(usize, bool)> {
            let (mut j, mut escaped) = (start, false);
            loop {
                match *b.get(j)? {
                    b'"' => return Some((j, escaped)),
                    b'\\' => {
                        escaped = true;
                        j += 2;
                    }
                    _ => j += 1,
                }
            }
        }
        // Bytes 0xA2 and 0xDC differ from `"` and `\` by the high bit alone.
        let pieces = ["a", "é", "¢", "Ü", "ܢ", "\\\"", "\\\\", "\\u00e9", " ", "0123456789abcdef"];
        let mut texts = Vec::new();
        for a in pieces {
            for b in pieces {
                for n in 0..12 {
                    texts.push(format!("{}{a}{b}\"tail", "x".repeat(n)));
                    texts.push(format!("{}{a}{b}", "x".repeat(n)));
                }
            }
        }
        for text in &texts {
            for start in 0..text.len().min(4) {
                if text.is_char_boundary(start) {
                    assert_eq!(string_end(text, start), naive(text.as_bytes(), start), "{text:?} from {start}");
                }
            }
        }
    }

    /// Random documents near the edges (few distinct keys, escapes, big numbers, deep
    /// nesting, broken bytes): the one pass and the two passes agree on every one.
    #[test]
    fn one_pass_agrees_with_two_passes_on_random_documents() {
        struct Rng(u64);
        impl Rng {
            fn next(&mut self, n: u64) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 % n
            }
        }
        const KEYS: [&str; 8] = ["a", "b", "a\\u0062", "ab", "\\u0061", "\\ud800", "\\ud800\\udc00", "\\udc00"];
        const SCALARS: [&str; 12] = ["1", "-0", "1e5", "1e400", "1.7976931348623157e308", "2.5E-400", "true", "null", "\"x\"", "\"\\ud800\"", "\"\\n\\\"\"", "\"é\""];
        fn value(r: &mut Rng, depth: usize, out: &mut String) {
            let kinds = if depth > 140 { 3 } else if depth > 4 && r.next(8) > 0 { 5 } else { 6 };
            match r.next(kinds) {
                0..=2 => out.push_str(SCALARS[r.next(SCALARS.len() as u64) as usize]),
                3 | 4 => {
                    out.push('[');
                    for i in 0..r.next(3) {
                        if i > 0 {
                            out.push(',');
                        }
                        value(r, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..r.next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push('"');
                        out.push_str(KEYS[r.next(KEYS.len() as u64) as usize]);
                        out.push_str("\":");
                        value(r, depth + 1, out);
                    }
                    out.push('}');
                }
            }
        }
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut params = String::new();
            if r.next(10) == 0 {
                let n = 120 + r.next(10) as usize;
                params = format!("{}{}", "[".repeat(n), "]".repeat(n));
            } else {
                value(&mut r, 2, &mut params);
            }
            let mut doc = format!(r#"{{"jsonrpc":"2.0","id":{},"method":"m","params":{params}}}"#, r.next(3));
            if r.next(4) == 0 {
                doc = format!("[{doc},{doc}]");
            }
            let mut bytes = doc.into_bytes();
            match r.next(20) {
                0 => {
                    let at = r.next(bytes.len() as u64) as usize;
                    bytes[at] = 0xff;
                }
                1 => {
                    let at = r.next(bytes.len() as u64) as usize;
                    bytes.truncate(at);
                }
                _ => {}
            }
            assert_eq!(one_pass(&bytes), two_passes(&bytes), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}

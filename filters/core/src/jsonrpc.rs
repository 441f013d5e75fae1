//! JSON-RPC 2.0 envelopes, parsed borrowed: `params`, `result` and `error` stay raw until a
//! filter needs them.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;

#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(default, borrow)]
    pub jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    /// `Some` whenever the member is present, even as `null` (JSON-RPC: a message with an
    /// `id` member is a request, not a notification).
    #[serde(default, borrow, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
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

impl<'a> Envelope<'a> {
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
pub enum Body<'a> {
    Single(Envelope<'a>),
    Batch(Vec<Envelope<'a>>),
}

impl<'a> Body<'a> {
    pub fn messages(&self) -> &[Envelope<'a>] {
        match self {
            Body::Single(e) => std::slice::from_ref(e),
            Body::Batch(v) => v,
        }
    }
}

/// Parses a JSON-RPC body. An empty batch is invalid, as JSON-RPC says.
pub fn parse_body(bytes: &[u8]) -> Result<Body<'_>, RpcParseError> {
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let batch: Vec<Envelope<'_>> = serde_json::from_slice(bytes).map_err(classify)?;
            if batch.is_empty() {
                return Err(RpcParseError::Invalid("empty batch".into()));
            }
            Ok(Body::Batch(batch))
        }
        Some(b'{') => Ok(Body::Single(serde_json::from_slice(bytes).map_err(classify)?)),
        Some(_) => {
            // Valid JSON that is neither object nor array is an invalid request, not a parse error.
            serde_json::from_slice::<IgnoredAny>(bytes).map_err(classify)?;
            Err(RpcParseError::Invalid("a JSON-RPC message must be an object".into()))
        }
        None => Err(RpcParseError::Parse("empty body".into())),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            }
        }
    }
}

//! Tool and prompt arguments as the policy and the audit read them: a JSON tree borrowing
//! from the request body (keys and strings without escapes are not copied), each object's
//! members sorted by key. Read once per call: argument rules walk it, and its canonical
//! form is the audit digest. Unlike `serde_json::Value`, it costs one allocation per object
//! or array, not one per key, string and map node.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use tollgate_core::raw_object::Key;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Sorted by key (UTF-8 bytes, as `serde_json::Map` orders them), each key once (the
    /// last of repeated keys, as `serde_json::Value` keeps it).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
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

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Json::Array(_))
    }

    /// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings and
    /// numbers as serde_json writes them. Its SHA-256 is the audit digest of arguments.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            // Writing into a Vec cannot fail.
            Json::Number(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Json::String(s) => {
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

    /// The same tree from a `serde_json::Value` (owned).
    pub fn from_value(value: &serde_json::Value) -> Json<'static> {
        use serde_json::Value;
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(Cow::Owned(s.clone())),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(sorted(map.iter().map(|(k, v)| (Cow::Owned(k.clone()), Json::from_value(v))).collect())),
        }
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

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        // As serde_json::Value: a float that is not finite reads as null.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(sorted(members)))
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
        let j: Json<'_> = serde_json::from_str(r#"{"b": [1, {"z": 1, "a": "é"}], "a": null, "c": 1.5, "\u0007q\"": "\n"}"#).unwrap();
        assert_eq!(canonical(&j), r#"{"\u0007q\"":"\n","a":null,"b":[1,{"a":"é","z":1}],"c":1.5}"#);
    }

    #[test]
    fn reads_as_serde_json_value_reads() {
        for text in [
            r#"{"table":"orders","sql":"select 1","options":{"database":"sales","timeout_ms":2000}}"#,
            r#"{"a":1,"a":2,"b":[1.0,1e5,-0,-0.0,1E-7,18446744073709551615,-9223372036854775808,12345678901234567890123]}"#,
            r#"{"é":"\ud83d\ude00","e\u0301":"x","z\u0000":"\u0000","":{"":[]}}"#,
            r#"[true,false,null,"a\"b",{"k":{"k":{"k":[{}]}}}]"#,
            r#""plain""#,
            r#"3.25"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let j: Json<'_> = serde_json::from_str(text).unwrap();
            let mut expected = String::new();
            canonical_of_value(&value, &mut expected);
            assert_eq!(canonical(&j), expected, "{text}");
            assert_eq!(Json::from_value(&value), j, "{text}");
        }
    }

    #[test]
    fn every_key_is_an_ordinary_key() {
        // serde_json::Value (raw_value feature) reads this object as the JSON in its string.
        let text = r#"{"$serde_json::private::RawValue":"{\"table\":\"orders\"}"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(value, json!({"table": "orders"}));
        let j: Json<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(j.get("table"), None);
        assert_eq!(canonical(&j), text);
    }

    #[test]
    fn keys_and_strings_borrow_unless_escaped() {
        let j: Json<'_> = serde_json::from_str(r#"{"plain":"text","esc\u0061ped":"a\nb"}"#).unwrap();
        let Json::Object(members) = &j else { panic!("{j:?}") };
        assert!(matches!(&members[0], (Cow::Owned(k), Json::String(Cow::Owned(_))) if k == "escaped"));
        assert!(matches!(&members[1], (Cow::Borrowed("plain"), Json::String(Cow::Borrowed("text")))));
        assert_eq!(j.get("escaped").and_then(Json::as_str), Some("a\nb"));
        assert_eq!(j.get("missing"), None);
        assert_eq!(Json::from_value(&json!({"b": 1, "a": 2})).get("a"), Some(&Json::Number(2.into())));
    }
}

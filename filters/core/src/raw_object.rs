//! A JSON object as its members in document order, keys borrowed where possible and values
//! left raw: for rewriting one member while keeping every other byte for byte, and for
//! reading an object that may repeat keys (each occurrence is kept).

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug)]
pub struct RawMembers<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawMembers<'a> {
    /// The first member named `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key, value));
                }
                Ok(RawMembers(out))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_in_order_with_duplicates_and_escaped_keys() {
        let m: RawMembers<'_> = serde_json::from_str(r#"{"b": [1, 2], "a\u0041": {"x": 1}, "b": null}"#).unwrap();
        let keys: Vec<&str> = m.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["b", "aA", "b"]);
        assert_eq!(m.get("b").unwrap().get(), "[1, 2]");
        assert_eq!(m.get("aA").unwrap().get(), r#"{"x": 1}"#);
        assert!(serde_json::from_str::<RawMembers<'_>>("[1]").is_err());
    }
}

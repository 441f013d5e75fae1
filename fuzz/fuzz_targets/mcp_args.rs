//! MCP tool arguments as the policy reads them (filters/mcp/src/args.rs, number.rs), against
//! serde_json's reading of the same text. Asserts: whatever serde_json reads as a `Value`,
//! `args::parse` reads too, to the same tree (objects sorted, the last of repeated keys,
//! strings as written, each number's text read by serde_json to the same number); a string
//! read as `Encoded` is one whose trimmed text starts like JSON, and its inner value, when
//! read, is what serde_json reads from that text; every number's `Reading` parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_mcp::args::{self, Json};

fn project(j: &Json<'_>) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            assert!(n.reading().is_some() || n.text().contains(['e', 'E']), "a plain number without a reading: {}", n.text());
            serde_json::from_str(n.text()).expect("a number serde_json reads")
        }
        Json::String(s) => Value::String(s.to_string()),
        Json::Encoded(s, inner) => {
            let t = s.trim();
            assert!(t.starts_with(['[', '{']) || t == "null", "read as JSON: {s:?}");
            if let Some(inner) = inner {
                if let Ok(v) = serde_json::from_str::<Value>(t) {
                    assert_eq!(project(inner), v, "the JSON inside {s:?}");
                }
            }
            Value::String(s.to_string())
        }
        Json::Array(items) => Value::Array(items.iter().map(project).collect()),
        Json::Object(members) => {
            assert!(members.windows(2).all(|w| w[0].0 < w[1].0), "members sorted, each key once");
            Value::Object(members.iter().map(|(k, v)| (k.to_string(), project(v))).collect())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ours = args::parse(text);
    let literal = args::parse_literal(text);
    let Ok(theirs) = serde_json::from_str::<Value>(text) else { return };
    let ours = ours.unwrap_or_else(|e| panic!("refused what serde_json reads: {e}"));
    assert_eq!(project(&ours), theirs);
    let literal = literal.unwrap_or_else(|e| panic!("literal refused what serde_json reads: {e}"));
    assert_eq!(project(&literal), theirs);
});

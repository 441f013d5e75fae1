//! MCP request reading (filters/mcp/src/message.rs, args.rs), as the exchange does it: one
//! pass with params read as an object (`parse_body_unique_as::<ObjectParams>` +
//! `read_parsed_message`) and, when that pass fails, raw params (`parse_body_unique` +
//! `read_message`). Asserts:
//! - the two paths agree: when the one-pass reading succeeds, the raw reading succeeds and
//!   every message reads the same (kind, id, method, target, arguments, or the same refusal
//!   code);
//! - differential against an independent reading (tollgate-fuzz `J`): the method is the
//!   body's `method`; a `tools/call` / `prompts/get` targets `params.name`, a
//!   `resources/read` `params.uri`; the arguments are `params.arguments` (compared as
//!   `serde_json::Value`s, so key order and number formatting do not matter) and their
//!   canonical form re-parses to them;
//! - the 2026-07-28 routing headers: a message passes `check_routing_headers` with its own
//!   method and name (verbatim and base64 `=?base64?…?=`), and fails with another name.
#![no_main]
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tollgate_core::wire::jsonrpc::{parse_body_unique, parse_body_unique_as, Kind};
use tollgate_mcp::message::{check_routing_headers, read_message, read_parsed_message, Message, ObjectParams, Target};
use tollgate_fuzz::J;

fn summary(m: &Message<'_>) -> (Kind, Option<String>, String, String, Option<Vec<u8>>) {
    let target = match &m.target {
        Target::None => String::new(),
        Target::Tool(n) => format!("tool:{n}"),
        Target::Prompt(n) => format!("prompt:{n}"),
        Target::Resource(n) => format!("resource:{n}"),
    };
    let args = m.arguments.as_ref().map(|a| {
        let mut out = Vec::new();
        a.write_canonical(&mut out);
        out
    });
    (m.kind, m.id.map(|i| i.get().to_string()), m.method.to_string(), target, args)
}

/// Equal JSON, numbers within a rounding step: serde_json's default float parsing is not
/// correctly rounded, so a long number and its shortest form may read 1 ULP apart.
fn approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p == q || (p - q).abs() <= p.abs().max(q.abs()) * 1e-15,
            _ => x == y,
        },
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| approx_eq(p, q)),
        (Object(x), Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w))),
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = parse_body_unique(data);
    let Ok(raw) = raw else {
        assert!(parse_body_unique_as::<ObjectParams<'_>>(data).is_err(), "one pass accepted what the raw pass refuses");
        return;
    };
    let raw_read: Vec<_> = raw.messages().iter().map(|e| read_message(e).map(|m| summary(&m)).map_err(|r| r.code)).collect();
    if let Ok(parsed) = parse_body_unique_as::<ObjectParams<'_>>(data) {
        let one: Vec<_> = parsed.into_messages().map(|e| read_parsed_message(e).map(|m| summary(&m)).map_err(|r| r.code)).collect();
        assert_eq!(one, raw_read, "the one-pass and the raw reading disagree");
    }

    let v = J::parse(data).expect("accepted body is JSON");
    let value: serde_json::Value = serde_json::from_slice(data).expect("accepted body is JSON");
    let msgs: Vec<(&J, &serde_json::Value)> = match (&v, &value) {
        (J::Arr(items), serde_json::Value::Array(vals)) => items.iter().zip(vals).collect(),
        _ => vec![(&v, &value)],
    };
    for ((m, mv), envelope) in msgs.into_iter().zip(raw.messages()) {
        let Ok(message) = read_message(envelope) else { continue };
        if message.kind == Kind::Response {
            continue;
        }
        assert_eq!(Some(message.method.as_ref()), m.get("method").and_then(J::str), "method differs");
        let params = m.get("params");
        let name = params.and_then(|p| p.get("name")).and_then(J::str);
        let uri = params.and_then(|p| p.get("uri")).and_then(J::str);
        match (&message.target, message.method.as_ref()) {
            (Target::Tool(n), "tools/call") | (Target::Prompt(n), "prompts/get") => assert_eq!(Some(n.as_ref()), name),
            (Target::Resource(u), "resources/read" | "resources/subscribe" | "resources/unsubscribe") => assert_eq!(Some(u.as_ref()), uri),
            (Target::None, "tools/call" | "prompts/get" | "resources/read" | "resources/subscribe" | "resources/unsubscribe") => {
                panic!("a targeted method read without its target")
            }
            (Target::None, _) => {}
            (t, method) => panic!("{method} read with target {t:?}"),
        }
        if let Some(args) = &message.arguments {
            let mut canonical = Vec::new();
            args.write_canonical(&mut canonical);
            let mine: serde_json::Value = serde_json::from_slice(&canonical).expect("canonical arguments are JSON");
            let theirs = mv.get("params").and_then(|p| p.get("arguments"));
            assert!(theirs.is_some_and(|t| approx_eq(&mine, t)), "arguments differ: {mine:?} vs {theirs:?}");
        }
        // Header values are trimmed: only names and methods without outer whitespace (and
        // not themselves in the encoded form) can be sent verbatim.
        let name = message.target.name().map(str::to_string);
        let method = message.method.to_string();
        let verbatim = |s: &str| s.trim() == s && !s.starts_with("=?base64?");
        if verbatim(&method) && name.as_deref().map_or(true, verbatim) {
            assert!(check_routing_headers(Some(&method), name.as_deref(), &message).is_ok(), "own headers refused");
        }
        if let Some(n) = &name {
            let encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(n.as_bytes()));
            if verbatim(&method) {
                assert!(check_routing_headers(Some(&method), Some(&encoded), &message).is_ok(), "base64 name refused");
            }
            let other = format!("{n}x");
            if verbatim(&other) {
                assert!(check_routing_headers(Some(&method), Some(&other), &message).is_err(), "another name accepted");
            }
        }
    }
});

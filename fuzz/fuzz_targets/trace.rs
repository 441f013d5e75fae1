//! Core W3C trace context (filters/core/src/wire/trace.rs). Asserts:
//! - `TraceParent::parse` accepts exactly what an independent reading of the W3C Trace
//!   Context rules accepts, and reads the same ids and flags;
//! - an accepted value re-serializes (`to_header`, version 00) to a value that parses to the
//!   same trace, and for version 00 equals the (trimmed) input;
//! - `participate` continues a valid inbound trace (same trace id, the caller's span as the
//!   parent, a fresh span id), else the fallback's, else starts one; the outgoing
//!   `traceparent` always parses;
//! - `tracestate_upsert` puts `key=value` first, keeps at most 32 members and never repeats
//!   the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::host::MemoryHost;
use tollgate_core::wire::trace::{participate, tracestate_upsert, TraceParent};
use tollgate_fuzz::Input;

fn lower_hex(s: &[u8]) -> bool {
    s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// W3C Trace Context, written from the spec: `version-traceid-parentid-flags`, lowercase
/// hex; version ff invalid; version 00 exactly 55 chars; higher versions may continue
/// after a `-`; ids not all zero. (Surrounding whitespace is trimmed, as header values are.)
fn reference(value: &str) -> Option<(String, String, u8)> {
    let v = value.trim().as_bytes();
    if v.len() < 55 || !lower_hex(&v[0..2]) || &v[0..2] == b"ff" {
        return None;
    }
    if &v[0..2] == b"00" && v.len() != 55 {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|b| *b == b'0') || parent.iter().all(|b| *b == b'0') {
        return None;
    }
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    Some((s(trace), s(parent), u8::from_str_radix(&s(flags), 16).unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let value = String::from_utf8_lossy(input.part()).into_owned();
    let state = String::from_utf8_lossy(input.part()).into_owned();
    let key = String::from_utf8_lossy(input.rest()).into_owned();

    let parsed = TraceParent::parse(&value);
    let want = reference(&value);
    assert_eq!(parsed.as_ref().map(|t| (t.trace_id.clone(), t.parent_id.clone(), t.flags)), want, "{value:?}");
    if let Some(tp) = &parsed {
        let header = tp.to_header();
        assert_eq!(TraceParent::parse(&header).as_ref(), Some(tp), "to_header does not round-trip");
        if value.trim().starts_with("00") {
            assert_eq!(header, value.trim());
        }
    }

    let host = MemoryHost::new();
    let fallback = (flags & 1 == 1).then(|| TraceParent {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        parent_id: "00f067aa0ba902b7".into(),
        flags: 1,
    });
    let step = participate(&host, Some(&value), (flags & 2 == 2).then_some(state.as_str()), fallback.clone());
    let out = TraceParent::parse(&step.traceparent).expect("outgoing traceparent does not parse");
    assert_eq!(out.trace_id, step.trace_id);
    assert_eq!(out.parent_id, step.span_id, "the gateway's span is the upstream's parent");
    match (&parsed, &fallback) {
        (Some(tp), _) => {
            assert_eq!(step.trace_id, tp.trace_id);
            assert_eq!(step.parent_span_id.as_deref(), Some(tp.parent_id.as_str()));
            assert!(!step.started);
        }
        (None, Some(fb)) => {
            assert_eq!(step.trace_id, fb.trace_id);
            assert!(!step.started && step.tracestate.is_none());
        }
        (None, None) => assert!(step.started && step.parent_span_id.is_none() && step.tracestate.is_none()),
    }

    if key.is_empty() || key.contains([',', '=']) || key.trim() != key {
        return;
    }
    let value_part = "v";
    let up = tracestate_upsert((flags & 4 == 4).then_some(state.as_str()), &key, value_part);
    let members: Vec<&str> = up.split(',').collect();
    assert_eq!(members[0], format!("{key}={value_part}"));
    assert!(members.len() <= 32, "{} members", members.len());
    assert!(
        members[1..].iter().all(|m| m.split('=').next().map(str::trim) != Some(key.as_str())),
        "key repeated: {up:?}"
    );
});

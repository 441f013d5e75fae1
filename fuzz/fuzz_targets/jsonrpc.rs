//! Core JSON-RPC envelopes (filters/core/src/wire/jsonrpc.rs). Asserts:
//! - `parse_body_unique` (one parse plus a byte scan) gives exactly what `parse_body` then
//!   `check_no_duplicate_keys` give (same outcome, same error text, same messages);
//! - differential against an independent reading of the same bytes (tollgate-fuzz `J`,
//!   every member kept): a body `parse_body_unique` accepts is JSON without a repeated key
//!   anywhere, an object or a non-empty array of objects, and each envelope's `jsonrpc`,
//!   `method`, `id`, `params`, `result`, `error` are what the independent reading finds;
//!   `kind()` follows JSON-RPC 2.0 on that reading. Conversely, a JSON body without
//!   repeated keys whose messages are well-typed objects is accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tollgate_core::wire::jsonrpc::{check_no_duplicate_keys, parse_body, parse_body_unique, Body, BodyError, Envelope, Kind};
use tollgate_fuzz::J;

fn two_passes(bytes: &[u8]) -> Result<usize, BodyError> {
    let body = parse_body(bytes).map_err(BodyError::Rpc)?;
    check_no_duplicate_keys(bytes).map_err(BodyError::Ambiguous)?;
    Ok(body.messages().len())
}

fn raw_j(raw: Option<&RawValue>) -> Option<J> {
    raw.map(|r| J::parse(r.get().as_bytes()).expect("a raw value that is not JSON"))
}

/// What JSON-RPC 2.0 says the message is, read from the independent reading.
fn spec_kind(m: &J) -> Option<Kind> {
    if m.get("jsonrpc").and_then(J::str) != Some("2.0") {
        return None;
    }
    let id = m.get("id");
    let id_ok = match id {
        None | Some(J::Null) | Some(J::Str(_)) | Some(J::U(_)) | Some(J::I(_)) | Some(J::F(_)) => true,
        _ => false,
    };
    if !id_ok {
        return None;
    }
    let method = m.get("method").is_some_and(|v| !matches!(v, J::Null));
    let result = m.get("result").is_some();
    let error = m.get("error").is_some();
    match (method, id, result, error) {
        (true, Some(J::Null), _, _) => None,
        (true, Some(_), false, false) => Some(Kind::Request),
        (true, None, false, false) => Some(Kind::Notification),
        (false, Some(i), true, false) if !matches!(i, J::Null) => Some(Kind::Response),
        (false, Some(_), false, true) => Some(Kind::Response),
        _ => None,
    }
}

fn check_envelope(e: &Envelope<'_>, m: &J) {
    let J::Obj(_) = m else { panic!("envelope read from a non-object: {m:?}") };
    let jsonrpc = match m.get("jsonrpc") {
        None | Some(J::Null) => None,
        Some(J::Str(s)) => Some(s.as_str()),
        Some(other) => panic!("jsonrpc {other:?} accepted"),
    };
    assert_eq!(e.jsonrpc.as_deref(), jsonrpc);
    let method = match m.get("method") {
        None | Some(J::Null) => None,
        Some(J::Str(s)) => Some(s.as_str()),
        Some(other) => panic!("method {other:?} accepted"),
    };
    assert_eq!(e.method.as_deref(), method, "method differs");
    assert_eq!(raw_j(e.id).as_ref(), m.get("id"), "id differs");
    // `params`, `result`, `error`: `null` reads as absent (serde's Option).
    let present = |k: &str| m.get(k).filter(|v| !matches!(v, J::Null)).cloned();
    assert_eq!(raw_j(e.params), present("params"), "params differ");
    assert_eq!(raw_j(e.result), present("result"), "result differs");
    assert_eq!(raw_j(e.error), present("error"), "error differs");
    let kind = e.kind().ok();
    // `result: null` is absent for serde but present for JSON-RPC: skip that corner.
    if !["result", "error", "params"].iter().any(|k| matches!(m.get(k), Some(J::Null))) {
        assert_eq!(kind, spec_kind(m), "kind() disagrees with JSON-RPC 2.0 on {m:?}");
    }
}

/// Each message as the envelope reads it: an object whose known members have their types.
fn well_typed(m: &J) -> bool {
    m.is_obj()
        && ["jsonrpc", "method"].iter().all(|k| matches!(m.get(k), None | Some(J::Null) | Some(J::Str(_))))
}

fuzz_target!(|data: &[u8]| {
    let one = parse_body_unique(data);
    let one_summary = one.as_ref().map(|b| b.messages().len()).map_err(Clone::clone);
    let two = two_passes(data);
    // Same outcome, same error, same position (F5, fuzz/regressions/jsonrpc/, fixed: the
    // byte scan once placed a repeated key's error at the key, serde at its colon).
    assert_eq!(one_summary, two, "one pass and two passes disagree");

    let independent = J::parse(data);
    match &one {
        Ok(body) => {
            let v = independent.expect("accepted a body serde_json cannot read");
            assert!(!v.has_duplicates(), "accepted a body with a repeated key");
            let msgs: Vec<&J> = match (&v, body) {
                (J::Arr(items), Body::Batch(_)) => items.iter().collect(),
                (J::Obj(_), Body::Single(_)) => vec![&v],
                _ => panic!("body shape differs: {v:?}"),
            };
            assert_eq!(msgs.len(), body.messages().len());
            assert!(!msgs.is_empty());
            for (e, m) in body.messages().iter().zip(msgs) {
                check_envelope(e, m);
            }
        }
        Err(_) => {
            if let Some(v) = independent {
                let msgs: Vec<&J> = match &v {
                    J::Arr(items) => items.iter().collect(),
                    J::Obj(_) => vec![&v],
                    _ => vec![],
                };
                let acceptable = !msgs.is_empty() && msgs.iter().all(|m| well_typed(m)) && !v.has_duplicates();
                assert!(!acceptable, "refused a well-formed body: {:?}", one.err());
            }
        }
    }
});

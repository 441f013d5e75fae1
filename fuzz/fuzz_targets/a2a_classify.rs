//! A2A classification (filters/a2a/src/classify.rs). Asserts:
//! - `classify_rpc` against an independent reading of the body (tollgate-fuzz `J`, every
//!   member kept): an accepted call is one JSON object with no repeated key anywhere,
//!   `jsonrpc` "2.0", a string `method` equal to `raw_method`, the same `id` and `params`,
//!   and no `result` / `error`; a batch is refused as a batch; a body with a repeated key
//!   is refused;
//! - `decode_path` / `classify_head`: the path is classified in its decoded form, so the
//!   decoded path re-encoded (`encode_path`) classifies the same; a REST task id never
//!   holds a `/`; a card's public prefix decodes to the path before `.well-known`, ending
//!   in `/`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_a2a::classify::{classify_head, classify_rpc, decode_path, encode_path, BodyClass, Head};
use tollgate_fuzz::{Input, J};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let path = String::from_utf8_lossy(input.part()).into_owned();
    let body = input.rest();

    // ---- the body ----
    let v = J::parse(body);
    match classify_rpc(body) {
        Ok(call) => {
            let m = v.as_ref().expect("accepted a body that is not JSON");
            assert!(m.is_obj(), "accepted a non-object: {m:?}");
            assert!(!m.has_duplicates(), "accepted a repeated key");
            assert_eq!(m.get("jsonrpc").and_then(J::str), Some("2.0"));
            assert_eq!(m.get("method").and_then(J::str), Some(call.raw_method.as_ref()), "method differs");
            assert_eq!(call.id.map(|i| J::parse(i.get().as_bytes()).unwrap()).as_ref(), m.get("id"), "id differs");
            let params = m.get("params").filter(|p| !matches!(p, J::Null));
            assert_eq!(call.params.map(|p| J::parse(p.get().as_bytes()).unwrap()).as_ref(), params, "params differ");
            assert!(m.get("result").map_or(true, |r| matches!(r, J::Null)) && !m.has("error"), "a response accepted as a call");
        }
        Err(BodyClass::Batch) => assert!(matches!(v, Some(J::Arr(_))), "a non-array refused as a batch"),
        Err(BodyClass::Ambiguous { .. }) => {}
        // -32700 only for what is not JSON (or empty): valid JSON is never a parse error.
        Err(BodyClass::Parse(_)) => assert!(v.is_none(), "valid JSON refused as a parse error: {v:?}"),
        Err(BodyClass::Invalid { .. }) => {
            if let Some(J::Obj(_)) = &v {
                let m = v.as_ref().unwrap();
                let ok_id = matches!(m.get("id"), None | Some(J::Str(_)) | Some(J::U(_)) | Some(J::I(_)) | Some(J::F(_)));
                let well_formed = !m.has_duplicates()
                    && m.get("jsonrpc").and_then(J::str) == Some("2.0")
                    && m.get("method").and_then(J::str).is_some()
                    && ok_id
                    && !m.has("result")
                    && !m.has("error");
                assert!(!well_formed, "refused a well-formed call");
            }
        }
    }
    if matches!(v, Some(ref j) if j.has_duplicates()) {
        assert!(classify_rpc(body).is_err(), "a repeated key accepted");
    }

    // ---- the path ----
    let method = ["GET", "POST", "DELETE", "PUT", "get"][usize::from(flags % 5)];
    let content_type = (flags & 8 != 0).then_some("application/json");
    let head = classify_head(method, &path, content_type);
    let decoded = decode_path(&path);
    assert_eq!(head.is_err(), decoded.is_err());
    // (A literal backslash is taken as it is, but its encoded form is refused as an
    // encoded separator: such paths are left out of the re-encoding check.)
    if let (Ok(head), Ok(decoded)) = (&head, &decoded) {
        if decoded.contains('\\') {
            return;
        }
        let again = encode_path(decoded);
        assert_eq!(decode_path(&again).as_deref(), Ok(decoded.as_ref()), "encode_path does not decode back");
        assert_eq!(classify_head(method, &again, content_type).as_ref(), Ok(head), "the re-encoded path classifies differently");
        match head {
            Head::Rest { task_id: Some(id), .. } => assert!(!id.contains('/') && !id.is_empty(), "task id {id:?}"),
            Head::Card { prefix, .. } => {
                let p = decode_path(prefix).expect("card prefix decodes");
                assert!(p.ends_with('/'));
                assert!(decoded.starts_with(p.trim_end_matches('/')), "card prefix {p:?} is not the start of {decoded:?}");
            }
            _ => {}
        }
    }
});

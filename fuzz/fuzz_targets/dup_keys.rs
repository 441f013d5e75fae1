//! The duplicate-key check (filters/core/src/wire/jsonrpc.rs), two implementations against an
//! independent one: `check_no_duplicate_keys` (a serde visitor) and the byte scan inside
//! `parse_body_unique` (reached by wrapping the input as the `params` of a request) must
//! both refuse exactly the JSON documents in which the independent reading (tollgate-fuzz
//! `J`, all members kept) finds a repeated key, and accept the others.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::wire::jsonrpc::{check_no_duplicate_keys, parse_body_unique, BodyError};
use tollgate_fuzz::J;

fuzz_target!(|data: &[u8]| {
    let Some(v) = J::parse(data) else {
        // Not JSON: the check refuses it too.
        assert!(check_no_duplicate_keys(data).is_err(), "accepted what serde_json refuses");
        return;
    };
    let dup = v.has_duplicates();
    let check = check_no_duplicate_keys(data);
    assert_eq!(check.is_err(), dup, "check_no_duplicate_keys: {check:?}, independent: duplicate {dup}");

    if v.depth() + 2 >= 128 {
        return; // the wrapper adds nesting: serde_json's limit would refuse it for that
    }
    let mut wrapped = br#"{"jsonrpc":"2.0","id":1,"method":"m","params":"#.to_vec();
    wrapped.extend_from_slice(data);
    wrapped.push(b'}');
    match parse_body_unique(&wrapped) {
        Ok(_) => assert!(!dup, "parse_body_unique accepted a repeated key"),
        Err(BodyError::Ambiguous(e)) => assert!(dup, "parse_body_unique refused a unique document: {e}"),
        Err(BodyError::Rpc(e)) => panic!("wrapped valid JSON refused as JSON-RPC: {e:?}"),
    }
});

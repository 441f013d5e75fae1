//! The store's answers (filters/core/src/fleet/rls.rs, wire/protobuf.rs): bytes from a
//! server the filter trusts only as far as the wire format goes. Asserts:
//! - reading any bytes never panics, and the field reader ends after at most one error;
//! - an answer is either an error or says OK / OVER_LIMIT with as many statuses as asked
//!   (or none);
//! - whatever the writer writes, the reader reads back field by field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::fleet::rls;
use tollgate_core::wire::protobuf::{Reader, Value, Writer};
use tollgate_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let asked = usize::from(input.byte() % 4);
    let body = input.rest();
    let errors = Reader::new(body).filter(Result::is_err).count();
    assert!(errors <= 1);
    if let Ok(answer) = rls::answer(body, asked) {
        assert!(answer.statuses.is_empty() || answer.statuses.len() == asked);
    }
    // Round trip: the input's bytes as fields of a written message.
    let mut w = Writer::new();
    let mut expected = Vec::new();
    for (i, chunk) in body.chunks(9).enumerate() {
        let field = (i % 20 + 1) as u32;
        if chunk.len() % 2 == 0 {
            let v = chunk.iter().fold(0u64, |a, b| a.wrapping_mul(251).wrapping_add(u64::from(*b)));
            w.uint(field, v);
            if v != 0 {
                expected.push((field, Value::Varint(v)));
            }
        } else {
            w.bytes(field, chunk);
            expected.push((field, Value::Bytes(chunk)));
        }
    }
    let bytes = w.finish();
    let read: Vec<_> = Reader::new(&bytes).collect::<Result<_, _>>().expect("what the writer writes reads");
    assert_eq!(read, expected);
});

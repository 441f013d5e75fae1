//! Core incremental JSON scanner (filters/core/src/wire/json_scan.rs). Asserts:
//! - on any document serde_json accepts, the scanner finishes (`done`, not `failed`) and
//!   reports exactly the document's scalars, in order, with their paths (keys decoded,
//!   array indexes), strings decoded and numbers as written (compared to an independent
//!   ordered reading, tollgate-fuzz `J`);
//! - chunking never changes what is reported;
//! - with small limits: nothing panics, the report is a chunking-independent function of
//!   the input, and strings over the limit are never reported.
//! Also `StringBody` (the shared string rule) agrees with a byte-by-byte reading.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::wire::json_scan::{JsonScanner, Piece, Scalar, Seg, StringBody};
use tollgate_fuzz::{chunks, Input, J};

#[derive(Debug, Clone, PartialEq)]
enum Got {
    Str(String),
    Num(String),
    Bool(bool),
    Null,
}

fn scan(pieces: &[&[u8]], max_string: usize, max_depth: usize) -> (Vec<(Vec<Seg>, Got)>, bool, bool) {
    let mut s = JsonScanner::new(max_string, max_depth);
    let mut out = Vec::new();
    let mut push = |path: &[Seg], v: Scalar<'_>| {
        let got = match v {
            Scalar::Str(s) => Got::Str(s.to_string()),
            Scalar::Num(n) => Got::Num(n.to_string()),
            Scalar::Bool(b) => Got::Bool(b),
            Scalar::Null => Got::Null,
        };
        out.push((path.to_vec(), got));
    };
    for p in pieces {
        s.feed(p, &mut push);
    }
    s.finish(&mut push);
    (out, s.done(), s.failed())
}

fn expected(v: &J, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, J)>) {
    match v {
        J::Arr(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                expected(item, path, out);
                path.pop();
            }
        }
        J::Obj(members) => {
            for (k, item) in members {
                path.push(Seg::Key(k.clone()));
                expected(item, path, out);
                path.pop();
            }
        }
        scalar => out.push((path.clone(), scalar.clone())),
    }
}

fn same(got: &Got, want: &J) -> bool {
    match (got, want) {
        (Got::Str(a), J::Str(b)) => a == b,
        (Got::Bool(a), J::Bool(b)) => a == b,
        (Got::Null, J::Null) => true,
        (Got::Num(text), J::U(n)) => text.parse::<u64>().ok() == Some(*n) || text.parse::<f64>().ok() == Some(*n as f64),
        (Got::Num(text), J::I(n)) => text.parse::<i64>().ok() == Some(*n) || text.parse::<f64>().ok() == Some(*n as f64),
        (Got::Num(text), J::F(f)) => text.parse::<f64>().is_ok_and(|x| x == *f || (x - f).abs() <= f.abs() * 1e-15),
        _ => false,
    }
}

fn string_body_agrees(bytes: &[u8]) {
    // Inside a string: the pieces cover the bytes up to the closing quote exactly as a
    // byte-by-byte reading finds it.
    let mut naive_end = None;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            naive_end = Some(i);
            break;
        }
    }
    let mut body = StringBody::default();
    let mut at = 0;
    let mut end = None;
    while at < bytes.len() {
        let (piece, n) = body.next(&bytes[at..]);
        assert!(n >= 1 && at + n <= bytes.len());
        if piece == Piece::End {
            end = Some(at);
            break;
        }
        if piece == Piece::Text {
            assert!(!bytes[at..at + n].iter().any(|&c| c == b'"' || c == b'\\') || n == 1);
        }
        at += n;
    }
    assert_eq!(end, naive_end, "StringBody ends the string elsewhere");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let split = input.byte();
    let limits = input.byte();
    let doc = input.rest();
    string_body_agrees(doc);
    let pieces = chunks(doc, split);

    let (whole, done, failed) = scan(&[doc], usize::MAX, 1000);
    let (split_run, done2, failed2) = scan(&pieces, usize::MAX, 1000);
    assert_eq!((&whole, done, failed), (&split_run, done2, failed2), "chunking changed the scan");

    if let Some(v) = J::parse(doc) {
        assert!(done && !failed, "valid JSON not scanned to the end: done {done} failed {failed}");
        let mut want = Vec::new();
        expected(&v, &mut Vec::new(), &mut want);
        assert_eq!(whole.len(), want.len(), "scalar count differs: {whole:?} vs {want:?}");
        for ((gp, g), (wp, w)) in whole.iter().zip(&want) {
            assert_eq!(gp, wp, "path differs");
            assert!(same(g, w), "value at {gp:?}: scanner {g:?}, serde {w:?}");
        }
    }

    // Small limits: a chunking-independent prefix of the unlimited report, minus long strings.
    let max_string = usize::from(limits & 0x1f);
    let max_depth = usize::from(limits >> 5) + 1;
    let (a, ..) = scan(&[doc], max_string, max_depth);
    let (b, ..) = scan(&pieces, max_string, max_depth);
    assert_eq!(a, b, "chunking changed the limited scan");
    for (_, g) in &a {
        // (The limit is on strings; a number's first byte is always kept.)
        if let Got::Str(s) = g {
            assert!(s.len() <= max_string, "over-long scalar reported");
        }
    }
});

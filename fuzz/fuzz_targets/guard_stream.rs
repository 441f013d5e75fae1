//! LLM guardrails (filters/llm/src/guard): the streaming scanner against the whole-text scan.
//! Input: a flags byte (bits 0-1: which scanner; bit 2: detect-only instead of redact), a
//! split seed (`tollgate_fuzz::chunks`, moved to character boundaries), then the text (UTF-8,
//! invalid bytes replaced). Asserts, for every scanner (each has only bounded matches, so
//! its default window covers every match):
//! - the concatenated released text equals `redact(text, scan(text))` (the text itself in
//!   detect mode), however the text is cut into deltas;
//! - the hits reported over the stream equal `scan(text)` (so do the detector sets);
//! - hits are in bounds, on character boundaries, non-empty; nothing more than the window
//!   (plus a partial character) is held after a push; scanning twice gives the same hits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;
use tollgate_fuzz::{chunks, Input};
use tollgate_llm::guard::{sort_hits, GuardConfig, Scanner, StreamGuard};

fn build(v: serde_json::Value) -> Rc<Scanner> {
    let c: GuardConfig = serde_json::from_value(v).expect("valid config");
    Rc::new(c.compile().expect("compiles"))
}

thread_local! {
    static SCANNERS: [Rc<Scanner>; 4] = [
        // Every built-in (window 1026: the longest JWT), a regex, a word list.
        build(serde_json::json!({"detectors": {
            "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{4}"}, {"name": "word", "pattern": "\\bsecret[a-z]{0,8}\\b"}],
            "words": [{"name": "codenames", "words": ["Project Falcon", "bluebird", "c++", "é"]}]}})),
        // Short built-ins only: the window is the PEM BEGIN line (67 bytes).
        build(serde_json::json!({"detectors": {"builtin": ["card", "ssn", "ip", "aws_key", "phone", "private_key", "iban"]}})),
        // A permissive entropy detector overlapping the short built-ins (window 47: IPv6).
        build(serde_json::json!({"detectors": {"builtin": ["entropy", "ip", "card", "aws_key", "phone"],
            "entropy": {"min_len": 8, "max_len": 40, "threshold": 2.0}}})),
        // Words only, with an explicit small window (longest word 14 + 4).
        build(serde_json::json!({"detectors": {"builtin": [],
            "words": [{"name": "w", "words": ["ab", "a b", "abab", "Project Falcon"]}]}, "window": 18})),
    ];
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let split = input.byte();
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    let redact = flags & 4 == 0;
    let scanner = SCANNERS.with(|s| Rc::clone(&s[usize::from(flags & 3)]));

    let hits = scanner.scan(&text);
    assert_eq!(hits, scanner.scan(&text), "scan is not deterministic");
    let mut sorted = hits.clone();
    sort_hits(&mut sorted);
    assert_eq!(sorted, hits, "scan is not in redaction order");
    for h in &hits {
        assert!(h.start < h.end && h.end <= text.len(), "bad range {h:?}");
        assert!(text.is_char_boundary(h.start) && text.is_char_boundary(h.end), "hit off a char boundary {h:?}");
    }
    let want = if redact { scanner.redact(&text, &hits) } else { text.clone() };

    // Cut where `chunks` says, each cut moved forward to a character boundary.
    let mut parts = Vec::new();
    let (mut at, mut pos) = (0, 0);
    for c in chunks(text.as_bytes(), split) {
        pos += c.len();
        let mut end = pos;
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if end > at {
            parts.push(&text[at..end]);
            at = end;
        }
    }

    let mut g = StreamGuard::new(Rc::clone(&scanner), redact);
    let (mut out, mut got) = (String::new(), Vec::new());
    for p in &parts {
        let r = g.push(p);
        assert!(g.held() <= g.window() + 3, "holds {} bytes, window {}", g.held(), g.window());
        out.push_str(&r.text);
        got.extend(r.hits);
    }
    let r = g.finish();
    out.push_str(&r.text);
    got.extend(r.hits);
    assert!(g.push("more").text.is_empty() && g.finish().text.is_empty(), "released after finish");
    sort_hits(&mut got);
    assert_eq!(out, want, "stream output differs from the whole text ({} parts)", parts.len());
    assert_eq!(got, hits, "stream hits differ from the whole text ({} parts)", parts.len());
});

//! Core SSE parser (filters/core/src/wire/sse.rs). Asserts:
//! - the events equal those of an independent reference parser (tollgate-fuzz `reference_sse`,
//!   the HTML standard's algorithm), whatever the chunking;
//! - with `keeping_raw`, the raw blocks handed out plus `pending_raw` reproduce the input
//!   byte for byte, and each event's raw block re-parses to that same event;
//! - `to_bytes` and `to_bytes_replacing` of every event parse back to the event;
//! - an event past `max_event_bytes` is refused and nothing held exceeds the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::wire::sse::{SseEvent, SseItem, SseParser};
use tollgate_fuzz::{chunks, reference_sse, Input};

fn run(stream: &[&[u8]], max: usize, raw: bool) -> (Vec<SseEvent>, Vec<(Option<SseEvent>, Vec<u8>)>, Vec<u8>, bool) {
    let mut parser = SseParser::new(max);
    if raw {
        parser = parser.keeping_raw();
    }
    let mut events = Vec::new();
    let mut blocks = Vec::new();
    let mut failed = false;
    for chunk in stream {
        let r = parser.feed(chunk, |item, raw| {
            let e = match item {
                SseItem::Event(e) => {
                    events.push(e.clone());
                    Some(e.clone())
                }
                SseItem::Other => None,
            };
            blocks.push((e, raw.to_vec()));
        });
        if r.is_err() {
            failed = true;
            break;
        }
        assert!(parser.pending_bytes() <= max, "holds {} > {max}", parser.pending_bytes());
    }
    (events, blocks, parser.pending_raw().to_vec(), failed)
}

fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    run(&[bytes], usize::MAX, false).0
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let split = input.byte();
    let limit = input.byte();
    let stream = input.rest();
    let pieces = chunks(stream, split);

    let (whole, _, _, _) = run(&[stream], usize::MAX, false);
    let reference: Vec<SseEvent> =
        reference_sse(stream).into_iter().map(|(event, data, id)| SseEvent { event, data, id }).collect();
    assert_eq!(whole, reference, "parser and reference disagree");

    let (split_events, blocks, pending, failed) = run(&pieces, usize::MAX, true);
    assert!(!failed);
    assert_eq!(split_events, whole, "chunking changed the events");
    let mut again: Vec<u8> = blocks.iter().flat_map(|(_, raw)| raw.iter().copied()).collect();
    again.extend_from_slice(&pending);
    assert_eq!(again, stream, "raw blocks do not reproduce the stream");
    for (event, raw) in &blocks {
        if let Some(e) = event {
            // A block dispatched at the CR of a CRLF ends in CR: it parses on its own.
            assert_eq!(parse_all(raw), vec![e.clone()], "raw block does not re-parse to its event");
            assert_eq!(parse_all(&e.to_bytes()), vec![e.clone()], "to_bytes does not round-trip");
            let replaced = e.to_bytes_replacing(raw);
            assert_eq!(parse_all(&replaced), vec![e.clone()], "to_bytes_replacing does not round-trip");
        }
    }

    // A small limit: refused past it, never holding more.
    let max = usize::from(limit) + 1;
    let (limited, _, _, failed) = run(&pieces, max, limit & 1 == 0);
    if !failed {
        assert_eq!(limited, whole, "a limit that was never hit changed the events");
    } else {
        assert!(whole.len() >= limited.len());
        assert_eq!(limited[..], whole[..limited.len()]);
    }
});
